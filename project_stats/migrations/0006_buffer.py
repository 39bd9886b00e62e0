from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("project_stats", "0005_numeric_slugs"),
    ]

    operations = [
        migrations.CreateModel(
            name="AppliedBatch",
            fields=[
                ("batch_id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("applied_at", models.DateTimeField(db_index=True)),
            ],
        ),
    ]
