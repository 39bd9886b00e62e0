from __future__ import annotations

from django.apps import AppConfig


class ProjectStatsConfig(AppConfig):
    name = "project_stats"
    verbose_name = "Project stats"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
