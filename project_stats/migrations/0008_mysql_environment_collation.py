from django.db import migrations

# MariaDB and MySQL compare text with the table's collation, by default
# case- and accent-insensitive and blind to trailing spaces: "Production" and
# "production" would share buckets in the unique key and answer each other's
# reads. Environments are compared byte for byte, as on PostgreSQL and SQLite.
# A later AlterField of `environment` would drop this: repeat it then.


def _collation(connection, charset):  # type: ignore[no-untyped-def]
    if connection.mysql_is_mariadb:
        return f"{charset}_nopad_bin"
    return "utf8mb4_0900_bin" if charset == "utf8mb4" else f"{charset}_bin"


def _modify(apps, schema_editor, binary):  # type: ignore[no-untyped-def]
    connection = schema_editor.connection
    if connection.vendor != "mysql":
        return  # PostgreSQL and SQLite compare text byte for byte already
    model = apps.get_model("project_stats", "EventCount")
    field = model._meta.get_field("environment")
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT character_set_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = %s AND column_name = %s",
            [table, field.column],
        )
        (charset,) = cursor.fetchone()
        cursor.execute(
            "SELECT table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            [table],
        )
        (default,) = cursor.fetchone()
    collation = _collation(connection, charset) if binary else default
    schema_editor.execute(
        f"ALTER TABLE {schema_editor.quote_name(table)} MODIFY "
        f"{schema_editor.quote_name(field.column)} varchar({int(field.max_length)}) "
        f"CHARACTER SET {charset} COLLATE {collation} NOT NULL"
    )


def binary_environment(apps, schema_editor):  # type: ignore[no-untyped-def]
    _modify(apps, schema_editor, binary=True)


def default_environment(apps, schema_editor):  # type: ignore[no-untyped-def]
    _modify(apps, schema_editor, binary=False)


class Migration(migrations.Migration):
    dependencies = [
        ("project_stats", "0007_eventcount_storage"),
    ]

    operations = [
        migrations.RunPython(binary_environment, default_environment, atomic=False),
    ]
