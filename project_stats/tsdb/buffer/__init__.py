"""A Redis write buffer in front of the database, flushed into it exactly once.

With ``PROJECT_STATS["BUFFER"]`` set, :func:`write` adds increments to Redis
hashes and :func:`flush` moves them into the database, which stays the system
of record. Reads (:func:`read`, :func:`environment_seen`) add what is still
buffered to what is stored.

One module a part of the design: ``keys`` (the key layout: shards, hash
tags, groups), ``client`` (connections, and which failures ran nothing),
``write``, ``read``, ``flush`` (the protocol and its crash points), and the
Lua scripts in ``scripts/``, one a file.
"""

from __future__ import annotations

from collections.abc import Callable

from .client import (
    SENTINEL_PORT,
    SENTINEL_SCHEME,
    BufferUnavailable,
    SentinelAddress,
    is_sentinel,
    sentinel_address,
)
from .flush import (
    FlushIncomplete,
    FlushResult,
    ShardStats,
    flush,
    flush_projects,
    forget_redis_only,
    forget_redis_only_after_delete,
    pending_batch_ids,
    shard_stats,
)
from .keys import SHORT_GROUP_PROJECTS, SHORT_RETENTION_SECONDS, enabled, redis_only_rollups
from .read import READ_ROUND_FIELDS, READ_SCRIPT_FIELDS, environment_seen, read, read_stats
from .write import write

__all__ = [
    "READ_ROUND_FIELDS",
    "READ_SCRIPT_FIELDS",
    "SENTINEL_PORT",
    "SENTINEL_SCHEME",
    "SHORT_GROUP_PROJECTS",
    "SHORT_RETENTION_SECONDS",
    "BufferUnavailable",
    "FlushIncomplete",
    "FlushResult",
    "SentinelAddress",
    "ShardStats",
    "crash_hook",
    "enabled",
    "environment_seen",
    "flush",
    "flush_projects",
    "forget_redis_only",
    "forget_redis_only_after_delete",
    "is_sentinel",
    "pending_batch_ids",
    "read",
    "read_stats",
    "redis_only_rollups",
    "sentinel_address",
    "shard_stats",
    "write",
]

crash_hook: Callable[[str], None] | None = None
"""Called with the name of each crash point the flush protocol reaches (tests only)."""
