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
    # None: every write goes straight to the database. A dict (see
    # BUFFER_DEFAULTS) puts a Redis write buffer in front of it.
    "BUFFER": None,
    # Prepare the read path's statements on PostgreSQL (planned once per
    # connection). False behind a pooler that shares a connection between
    # clients per transaction (PgBouncer's transaction mode).
    "PREPARED_STATEMENTS": True,
}

BUFFER_DEFAULTS: dict[str, Any] = {
    # redis://host:port/db, rediss://..., unix://... or, through Redis
    # Sentinel, redis+sentinel://[[user]:password@]host:port,host:port/service/db
    # (?sentinel_password=...: the sentinels' own); required.
    "URL": None,
    # True: URL is one node of a Redis Cluster; the client finds the others.
    "CLUSTER": False,
    # Prepended to every key, so several sites can share one Redis.
    "PREFIX": "project_stats",
    # Projects are spread over this many hash tags (cluster slots). Changing
    # it moves buffered deltas: flush, then change.
    "SHARDS": 64,
    # A write Redis cannot take: "raise" or "database" (write it there instead).
    "ON_ERROR": "raise",
    # A read Redis cannot answer: "raise" (HTTP 503) or "database" (stored counts only).
    "READ_ON_ERROR": "raise",
    # Seconds: connecting to and waiting on Redis.
    "SOCKET_TIMEOUT": 2.0,
    # Seconds a flusher holds a shard before another may take it over.
    "LEASE_SECONDS": 60.0,
    # Seconds applied batch ids are kept (project_stats_prune deletes older ones).
    "KEEP_APPLIED_SECONDS": 7 * 86400,
    # Rows one flush transaction applies at most; a buffered batch is closed
    # when it holds this many.
    "FLUSH_MAX_ROWS": 50_000,
    # Shards a flusher claims at a time: several flushers share the shards
    # and apply them in parallel.
    "CLAIM_SHARDS": 8,
    # Rollups kept in Redis only (their buckets expire there after their
    # retention; flushes, prune and backfill leave them alone). None: every
    # rollup kept six hours or less (10 s by default); () keeps all in the database.
    "REDIS_ONLY_ROLLUPS": None,
    # True: write even to a Redis whose maxmemory-policy may evict (anything
    # but noeviction), accepting that evicted counts are lost silently.
    "ACCEPT_EVICTION": False,
    # Replicas a write waits for (WAIT after its script), so that a failover
    # keeps it; one not acknowledged by them within WAIT_TIMEOUT seconds
    # raises BufferUnavailable ("may have been recorded"). 0: no wait.
    "WAIT_REPLICAS": 0,
    "WAIT_TIMEOUT": 1.0,
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

    @property
    def BUFFER(self) -> dict[str, Any] | None:
        """The buffer settings merged over ``BUFFER_DEFAULTS``, or None when off."""
        value = self._get("BUFFER")
        if value is None:
            return None
        return {**BUFFER_DEFAULTS, **value}

    @property
    def PREPARED_STATEMENTS(self) -> bool:
        return bool(self._get("PREPARED_STATEMENTS"))

    def raw(self, name: str) -> Any:
        """The configured value as written, for the system checks."""
        return self._get(name)


project_stats_settings = ProjectStatsSettings()
