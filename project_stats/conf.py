"""The ``PROJECT_STATS`` settings namespace, read at access time.

Nothing here caches the host's settings, so ``override_settings`` and
pytest-django's ``settings`` fixture take effect immediately.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # (seconds per bucket, buckets kept), finest first, as Sentry's TSDB.
    "ROLLUPS": ((10, 360), (3600, 168), (86400, 90)),
    # Largest series one read may build.
    "MAX_POINTS": 10_000,
    # Largest answer one read of several series may build (group=project):
    # series x points; ten series of MAX_POINTS by default.
    "MAX_TOTAL_POINTS": 100_000,
    # Authentication classes (dotted paths) whose users act with every scope,
    # limited by membership only; any other class without token scopes has none.
    "FULL_SCOPE_AUTHENTICATION_CLASSES": ("rest_framework.authentication.SessionAuthentication",),
    # "int" (current Sentry, its OpenAPI schema) or "float" (the spec's example).
    "TIMESTAMP_FORMAT": "int",
}


class ProjectStatsSettings:
    """Typed view of ``settings.PROJECT_STATS``; missing keys take ``DEFAULTS``."""

    def _get(self, name: str) -> Any:
        user = getattr(settings, "PROJECT_STATS", None) or {}
        return user.get(name, DEFAULTS[name])

    @property
    def ROLLUPS(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(r), int(n)) for r, n in self._get("ROLLUPS"))

    @property
    def MAX_POINTS(self) -> int:
        return int(self._get("MAX_POINTS"))

    @property
    def MAX_TOTAL_POINTS(self) -> int:
        return int(self._get("MAX_TOTAL_POINTS"))

    @property
    def FULL_SCOPE_AUTHENTICATION_CLASSES(self) -> tuple[str, ...]:
        return tuple(self._get("FULL_SCOPE_AUTHENTICATION_CLASSES"))

    @property
    def TIMESTAMP_FORMAT(self) -> str:
        return str(self._get("TIMESTAMP_FORMAT"))

    def raw(self, name: str) -> Any:
        """The configured value as written, for the system checks."""
        return self._get(name)


project_stats_settings = ProjectStatsSettings()
