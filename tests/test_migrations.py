from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_migrations_are_current() -> None:
    out = StringIO()
    call_command("makemigrations", "project_stats", "--check", "--dry-run", stdout=out)


@pytest.mark.postgres
@pytest.mark.django_db
def test_counts_are_stored_for_hot_updates() -> None:
    from django.db import connection

    from project_stats.models import EventCount

    table = EventCount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [table])
        (options,) = cursor.fetchone()
        # Every index of the table, by its columns: none holds the count,
        # and none is a prefix of another.
        indexes = connection.introspection.get_constraints(cursor, table)
    assert "fillfactor=70" in (options or [])
    columns = [
        tuple(c["columns"])
        for c in indexes.values()
        if (c["index"] or c["unique"]) and not c["foreign_key"] and not c["primary_key"]
    ]
    assert all("count" not in cols for cols in columns)
    assert ("project_id",) not in columns
    assert ("project_id", "stat", "rollup", "environment", "timestamp") in columns
