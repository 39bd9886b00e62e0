from django.db import migrations, models
from django.db.models import F


def drop_redirects_into_other_organizations(apps, schema_editor):  # type: ignore[no-untyped-def]
    # A project moved to another organization kept its redirects; they
    # resolved old slugs in the wrong organization. Saves now drop them.
    ProjectRedirect = apps.get_model("project_stats", "ProjectRedirect")
    ProjectRedirect.objects.using(schema_editor.connection.alias).exclude(
        organization_id=F("project__organization_id")
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("project_stats", "0003_projectredirect"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="eventcount",
            index=models.Index(
                condition=models.Q(("environment", ""), _negated=True),
                fields=["project", "environment"],
                name="project_stats_ec_project_env",
            ),
        ),
        migrations.RunPython(
            drop_redirects_into_other_organizations, migrations.RunPython.noop, elidable=True
        ),
    ]
