"""The buffer's configuration and key layout.

Keys (``P`` is the ``PREFIX``, ``s`` a shard number; project ``pk`` lives on
shard ``pk % SHARDS``)::

    {P:s}:live          hash    "pk:stat:rollup:bucket:environment" -> delta,
                                "e:pk:environment" -> 0 (an environment was written),
                                "~t" -> when the hash got its first delta (ms),
                                "~id" -> the id its batch will have (set by that delta),
                                "~inc" -> the run_id of the Redis server that created it
    {P:s}:live:b        zset    "rollup:bucket" the hash holds (score: bucket), for reads
    {P:s}:batch:<id>    hash    a closed live hash, waiting to be applied (and its ":b")
    {P:s}:batches       zset    ids of the closed batches (score: when closed, ms)
    {P:s}:lease         string  token of the flusher working on the shard, expiring
    {P:s}:flushed       hash    the shard's last flush: at (ms), seconds, rows
    {P:s}:r:<r>:<b>:<g> hash    a Redis-only rollup r's bucket b, for the shard's
                                projects of group g (SHORT_GROUP_PROJECTS of them):
                                "pk:stat:environment" -> count; expires
    {P:s}:r:<r>         zset    the buckets of rollup r held (score: their expiry)

The hash tag ``{P:s}`` puts all the keys of a shard in one Redis Cluster slot,
so every script (``scripts/*.lua``) touches a single slot, and the same names
serve one Redis and a cluster. Writes spread over the shards by project. A
hash's bucket index (``<hash>:b``) moves with it, so a read asks only for
buckets that hold deltas.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ...conf import project_stats_settings


def enabled() -> bool:
    return project_stats_settings.BUFFER is not None


def _config() -> dict[str, Any]:
    config = project_stats_settings.BUFFER
    if config is None:
        raise RuntimeError("PROJECT_STATS['BUFFER'] is not set")
    return config


# Rollups kept this long or less live in Redis only when REDIS_ONLY_ROLLUPS
# is not set: those buckets would be inserted and pruned again within hours.
SHORT_RETENTION_SECONDS = 6 * 3600


def redis_only_rollups(config: dict[str, Any] | None = None) -> dict[int, int]:
    """The rollups kept in Redis only, with how long (ms) a bucket outlives its last write.

    ``BUFFER["REDIS_ONLY_ROLLUPS"]``, or by default every configured rollup
    whose retention is at most six hours (the 10 s rollup of the defaults).
    Empty without a buffer.
    """
    if config is None:
        config = project_stats_settings.BUFFER
        if config is None:
            return {}
    retention = dict(project_stats_settings.ROLLUPS)
    chosen = config.get("REDIS_ONLY_ROLLUPS")
    if chosen is None:
        chosen = [r for r, n in retention.items() if r * n <= SHORT_RETENTION_SECONDS]
    # A bucket is read for its whole retention after it closes.
    return {int(r): (int(r) * (retention[int(r)] + 1)) * 1000 for r in chosen if r in retention}


def _tag(config: dict[str, Any], shard: int) -> str:
    return f"{{{config['PREFIX']}:{shard}}}"


def _shard(config: dict[str, Any], project_id: int) -> int:
    return project_id % int(config["SHARDS"])


def _by_shard(config: dict[str, Any], project_ids: Iterable[int]) -> dict[int, list[int]]:
    """The distinct ``project_ids`` per shard, ascending."""
    per_shard: defaultdict[int, list[int]] = defaultdict(list)
    for project_id in sorted(set(project_ids)):
        per_shard[_shard(config, project_id)].append(project_id)
    return per_shard


# A Redis-only bucket is a hash per shard and group of this many of the
# shard's projects (by id), not one per shard: a few dozen fields stay a
# compact listpack under Redis's default hash-max-listpack-entries (128),
# about 20 bytes a field against some 60 for a hash table; an hour of 10 s
# buckets of a busy series takes a quarter of the memory.
SHORT_GROUP_PROJECTS = 16


def _group(config: dict[str, Any], project_id: int) -> int:
    return project_id // int(config["SHARDS"]) // SHORT_GROUP_PROJECTS


def _grouped(config: dict[str, Any], project_ids: Iterable[int]) -> list[str]:
    """``"group=pk,pk,..."`` per group of ``project_ids`` (of one shard), for the scripts."""
    groups: defaultdict[int, list[str]] = defaultdict(list)
    for project_id in project_ids:
        groups[_group(config, project_id)].append(str(project_id))
    return [f"{group}={','.join(ids)}" for group, ids in sorted(groups.items())]


def _parse_field(field: bytes) -> tuple[int, int, int, int, str] | None:
    text = field.decode()
    if text[0] in "e~":  # environment markers and the hash's own fields
        return None
    project_id, stat, rollup, epoch, environment = text.split(":", 4)
    return int(project_id), int(stat), int(rollup), int(epoch), environment
