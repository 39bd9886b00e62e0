"""A Redis write buffer in front of the database, flushed into it exactly once.

With ``PROJECT_STATS["BUFFER"]`` set, :func:`write` adds increments to Redis
hashes and :func:`flush` moves them into the database, which stays the system
of record. Reads (:func:`read`, :func:`environment_seen`) add what is still
buffered to what is stored.

Keys (``P`` is the ``PREFIX``, ``s`` a shard number; project ``pk`` lives on
shard ``pk % SHARDS``)::

    {P:s}:live          hash    "pk:stat:rollup:bucket:environment" -> delta,
                                "e:pk:environment" -> 0 (an environment was written),
                                "~t" -> when the hash got its first delta (ms),
                                "~id" -> the id its batch will have (set by that delta)
    {P:s}:batch:<id>    hash    a live hash claimed by a flush, waiting to be applied
    {P:s}:batches       zset    ids of the claimed batches (score: claim time, ms)
    {P:s}:lease         string  token of the flusher working on the shard, expiring

The hash tag ``{P:s}`` puts all the keys of a shard in one Redis Cluster slot,
so every script below touches a single slot, and the same names serve one
Redis and a cluster. Writes spread over the shards by project.

Flush protocol (each step names the crash point right after it; :data:`crash_hook`
is called there so tests can kill the process). Every step runs on all the
shards at once, one round trip per Redis node::

    1. BEGIN script, per shard: take the lease (or leave the shard: another
       flusher has it), rename ``live`` to the batch key of its ``~id`` and
       record the id, list every claimed id (older ones too: a flusher that
       died left them).                                                "claimed"
    2. HGETALL every claimed batch.                                     "read"
    3. One database transaction: insert each batch id into AppliedBatch
       (already there: that batch is in the database, add nothing of it),
       add the counts of the others.              "applying" (before the commit)
                                                   "committed" (after it)
    4. ACK script, per batch: delete the batch key and its id, renew the
       lease.                                                          "acked"
    5. RELEASE script, per shard: drop the lease if it is still ours.

A flusher dying anywhere leaves either a claimed batch (applied or not; the
next flush finishes it, skipping it in the database if its id is there) or a
live hash (flushed next time); increments that arrive meanwhile land in a new
live hash (with a new id). Two flushers on one shard: the lease makes them take turns, and
should a lease expire under a slow flusher, the unique batch id still lets
only one of them apply the batch. Batch ids are random (chosen by the
write that creates the live hash), so Redis losing its data never makes a
new batch look applied.

Reads run one script per shard that returns, atomically, the live and every
claimed delta of the series with their batch ids (the live hash's too), then
read in one SQL statement the stored counts and which of those ids are
applied, and add the deltas of the others. A batch is thus counted once
whether its flush claims and commits it before, during or after the read;
a live hash needs its id because a flush may claim and commit it between the
two reads.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..conf import project_stats_settings
from . import database
from .database import Row

logger = logging.getLogger("project_stats.flush")

__all__ = [
    "BufferUnavailable",
    "FlushIncomplete",
    "FlushResult",
    "crash_hook",
    "enabled",
    "environment_seen",
    "flush",
    "pending_batch_ids",
    "read",
    "write",
]


class BufferUnavailable(Exception):
    """Redis could not be reached (or refused the command); nothing was half-done.

    A write raising it recorded none of the shards it names; see ``ON_ERROR``.
    """


class FlushIncomplete(BufferUnavailable):
    """Some shards could not be flushed; ``result`` tells what the others did."""

    def __init__(self, message: str, result: FlushResult) -> None:
        super().__init__(message)
        self.result = result


crash_hook: Callable[[str], None] | None = None
"""Called with the name of each crash point the flush protocol reaches (tests only)."""


def _reached(point: str) -> None:
    if crash_hook is not None:
        crash_hook(point)


def enabled() -> bool:
    return project_stats_settings.BUFFER is not None


def _config() -> dict[str, Any]:
    config = project_stats_settings.BUFFER
    if config is None:
        raise RuntimeError("PROJECT_STATS['BUFFER'] is not set")
    return config


# Scripts. Each touches the keys of one shard only (one cluster slot).

# KEYS: live. ARGV: now (ms), an id for the live hash should this write create
# it, then "field NUL delta NUL field NUL delta..." as one argument: the
# client packs one string instead of thousands.
# XXX: Redis does not undo a script's earlier writes when a later command of
# it fails; the only such failure here is HINCRBY passing 2**63 - 1 in one
# bucket, which no real count reaches before a flush.
_WRITE = """
redis.call('HSETNX', KEYS[1], '~t', ARGV[1])
redis.call('HSETNX', KEYS[1], '~id', ARGV[2])
local packed = ARGV[3]
local position, length = 1, #packed
while position <= length do
  local gap = string.find(packed, '\\0', position, true)
  local stop = string.find(packed, '\\0', gap + 1, true) or length + 1
  redis.call('HINCRBY', KEYS[1], string.sub(packed, position, gap - 1),
    string.sub(packed, gap + 1, stop - 1))
  position = stop + 1
end
return 1
"""

# KEYS: lease, live, batches. ARGV: token, lease ms, now ms, batch key prefix.
# The batch keeps the id the live hash got when it was created, which reads
# have seen already: a read that found these deltas live knows them by it.
_BEGIN = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local id = redis.call('HGET', KEYS[2], '~id')
if id then
  redis.call('RENAME', KEYS[2], ARGV[4] .. id)
  redis.call('ZADD', KEYS[3], ARGV[3], id)
end
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
if #ids == 0 then redis.call('DEL', KEYS[1]) end
return ids
"""

# KEYS: batch key, batches, lease. ARGV: batch id, token, lease ms.
_ACK = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return 1
"""

_HGETALL = """
return redis.call('HGETALL', KEYS[1])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: live, batches. ARGV: batch key prefix, then the fields wanted.
# Returns {live id, live values, id1, values1, id2, values2, ...}; HMGET in
# slices because Lua's unpack has a small stack.
_READ = """
local function get(key)
  local values = {}
  for i = 2, #ARGV, 500 do
    local part = redis.call('HMGET', key, unpack(ARGV, i, math.min(i + 499, #ARGV)))
    for j = 1, #part do values[#values + 1] = part[j] end
  end
  return values
end
local result = {redis.call('HGET', KEYS[1], '~id'), get(KEYS[1])}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  result[#result + 1] = id
  result[#result + 1] = get(ARGV[1] .. id)
end
return result
"""

_SHA = {
    source: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for source in (_WRITE, _BEGIN, _ACK, _HGETALL, _RELEASE, _READ)
}


# Clients: one per configuration, shared by the process (redis-py pools are
# thread-safe and reset themselves in a forked child).
_CLIENTS: dict[tuple[str, bool, float], Any] = {}


def _client(config: dict[str, Any]) -> Any:
    key = (str(config["URL"]), bool(config["CLUSTER"]), float(config["SOCKET_TIMEOUT"]))
    client = _CLIENTS.get(key)
    if client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        url, cluster, timeout = key
        # One retry on a broken connection (a pooled socket to a restarted
        # Redis), never on a timeout: a write Redis may still be running
        # would count twice if sent again.
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 1, (redis.exceptions.ConnectionError,)),
        }
        if cluster:
            client = redis.RedisCluster.from_url(url, **options)
        else:
            client = redis.Redis.from_url(url, **options)
        _CLIENTS[key] = client
    return client


def _tag(config: dict[str, Any], shard: int) -> str:
    return f"{{{config['PREFIX']}:{shard}}}"


def _shard(config: dict[str, Any], project_id: int) -> int:
    return project_id % int(config["SHARDS"])


def _unavailable(error: BaseException) -> BufferUnavailable:
    # The class name is enough to diagnose; the message may name hosts.
    return BufferUnavailable(f"Redis is unavailable ({type(error).__name__})")


def _eval(client: Any, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """One script on the node holding ``keys``, loading it when the node lacks it."""
    from redis.exceptions import NoScriptError

    try:
        return client.evalsha(_SHA[source], len(keys), *keys, *args)
    except NoScriptError:
        client.script_load(source)
        return client.evalsha(_SHA[source], len(keys), *keys, *args)


Call = tuple[int, Sequence[str], Sequence[Any]]
"""``(shard, keys, args)`` of one script run."""


def _per_node(config: dict[str, Any], source: str, calls: Sequence[Call]) -> list[Any]:
    """Run ``source`` once per call, pipelined: one round trip per Redis node.

    Returns each call's reply, or the exception it met (a
    ``BufferUnavailable`` when its node could not be reached: the call did
    not run, or, if the node failed while answering, may have).
    """
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        NoScriptError,
        RedisError,
        TryAgainError,
    )

    client = _client(config)
    groups: dict[int, tuple[Any, list[int]]] = {}
    if config["CLUSTER"]:
        for index, (_, keys, _args) in enumerate(calls):
            try:
                node = client.get_node_from_key(keys[0])
                node_client = client.get_redis_connection(node)
            except RedisError as error:
                logger.debug("No node for %s: %r", keys[0], error)
                node_client = None
            groups.setdefault(id(node_client), (node_client, []))[1].append(index)
    else:
        groups[0] = (client, list(range(len(calls))))

    replies: list[Any] = [None] * len(calls)
    for node_client, indexes in groups.values():
        if node_client is None:
            for index in indexes:
                replies[index] = BufferUnavailable("no Redis Cluster node serves this shard")
            continue
        todo = indexes
        for _attempt in range(2):
            pipe = node_client.pipeline(transaction=False)
            for index in todo:
                _, keys, args = calls[index]
                pipe.evalsha(_SHA[source], len(keys), *keys, *args)
            try:
                results = pipe.execute(raise_on_error=False)
            except RedisError as error:
                for index in todo:
                    replies[index] = _unavailable(error)
                break
            missing = []
            for index, result in zip(todo, results, strict=True):
                replies[index] = result
                if isinstance(result, NoScriptError):
                    missing.append(index)
            if not missing:
                break
            # NOSCRIPT: the script did not run; load it and run those again.
            try:
                node_client.script_load(source)
            except RedisError as error:
                for index in missing:
                    replies[index] = _unavailable(error)
                break
            todo = missing
        # A slot that moved (or a cluster healing): the command was refused,
        # not run; the cluster client follows the redirection.
        for index in indexes:
            if isinstance(replies[index], AskError | TryAgainError | ClusterDownError):
                _, keys, args = calls[index]
                try:
                    replies[index] = _eval(client, source, keys, args)
                except RedisError as error:
                    replies[index] = _unavailable(error)
            elif isinstance(replies[index], RedisError):
                replies[index] = _unavailable(replies[index])
    return replies


def _field(project_id: int, stat: int, rollup: int, epoch: int, environment: str) -> str:
    # The environment goes last: it may contain ":".
    return f"{project_id}:{stat}:{rollup}:{epoch}:{environment}"


def _parse_field(field: bytes) -> tuple[int, int, int, int, str] | None:
    text = field.decode()
    if text[0] in "e~":  # environment markers and the first-write time
        return None
    project_id, stat, rollup, epoch, environment = text.split(":", 4)
    return int(project_id), int(stat), int(rollup), int(epoch), environment


def _now_ms() -> int:
    return int(time.time() * 1000)


def write(rows: Sequence[Row]) -> None:
    """Add ``rows`` (distinct keys, nonzero counts) to the buffer.

    One script per shard, all pipelined: one round trip per Redis node. Each
    shard's part is atomic; a writer dying mid-call may have recorded some
    shards' parts and not others. When a shard cannot be reached,
    ``ON_ERROR`` decides: ``"raise"`` raises :class:`BufferUnavailable`,
    ``"database"`` writes that shard's rows straight to the database.
    """
    if not rows:
        return
    config = _config()
    per_shard: defaultdict[int, list[str]] = defaultdict(list)
    shard_rows: defaultdict[int, list[Row]] = defaultdict(list)
    markers: set[tuple[int, int, str]] = set()
    shards = int(config["SHARDS"])
    for row in rows:
        project_id, stat, environment, rollup, epoch, count = row
        shard = project_id % shards
        per_shard[shard] += (f"{project_id}:{stat}:{rollup}:{epoch}:{environment}", str(count))
        shard_rows[shard].append(row)
        if environment:
            markers.add((shard, project_id, environment))
    for shard, project_id, environment in markers:
        per_shard[shard] += (f"e:{project_id}:{environment}", "0")
    now = _now_ms()
    fresh = uuid.uuid4().hex
    calls = [
        (shard, [f"{_tag(config, shard)}:live"], [now, f"{shard}-{fresh}", "\0".join(parts)])
        for shard, parts in per_shard.items()
    ]
    replies = _per_node(config, _WRITE, calls)
    failed = [
        (shard, reply)
        for (shard, _, _), reply in zip(calls, replies, strict=True)
        if isinstance(reply, Exception)
    ]
    if not failed:
        return
    if config["ON_ERROR"] != "database":
        raise _first_error(failed, len(calls))
    logger.warning(
        "Redis unavailable for %d of %d shards; writing their increments to the database.",
        len(failed),
        len(calls),
    )
    database.upsert([row for shard, _ in failed for row in shard_rows[shard]])


def _first_error(failed: Sequence[tuple[int, Exception]], total: int) -> BufferUnavailable:
    shard, error = failed[0]
    if isinstance(error, BufferUnavailable):
        message = str(error)
    else:
        message = f"Redis refused the write ({type(error).__name__}: {error})"
    if len(failed) < total:
        message += f"; the other {total - len(failed)} shards of this batch were recorded"
    return BufferUnavailable(message)


def _read_calls(
    config: dict[str, Any], fields: dict[int, list[str]]
) -> tuple[list[Call], list[list[str]]]:
    calls: list[Call] = []
    field_lists: list[list[str]] = []
    for shard, wanted in fields.items():
        tag = _tag(config, shard)
        calls.append((shard, [f"{tag}:live", f"{tag}:batches"], [f"{tag}:batch:", *wanted]))
        field_lists.append(wanted)
    return calls, field_lists


def _buffered(fields: dict[int, list[str]]) -> dict[str, Counter[str]] | None:
    """Deltas of ``fields`` (per shard) by batch id, live hashes included, or None
    when Redis cannot answer and ``READ_ON_ERROR`` is ``"database"``.

    A live hash is keyed by the id its batch will have: a flush may claim and
    commit it before the caller reads the database, which then says so.
    """
    config = _config()
    calls, field_lists = _read_calls(config, fields)
    replies = _per_node(config, _READ, calls)
    batches: dict[str, Counter[str]] = {}
    for wanted, reply in zip(field_lists, replies, strict=True):
        if isinstance(reply, Exception):
            if config["READ_ON_ERROR"] == "database":
                logger.warning("Redis unavailable; answering a read from the database alone.")
                return None
            raise reply if isinstance(reply, BufferUnavailable) else _unavailable(reply)
        for position in range(0, len(reply), 2):
            if reply[position] is None:
                continue  # no live hash
            deltas: Counter[str] = Counter()
            _collect(deltas, wanted, reply[position + 1])
            if deltas:
                batches[reply[position].decode()] = deltas
    return batches


def _collect(into: Counter[str], fields: Sequence[str], values: Sequence[bytes | None]) -> None:
    for field, value in zip(fields, values, strict=True):
        if value is not None:
            into[field] += int(value)


def read(
    project_ids: Sequence[int],
    stat: int,
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int], int]:
    """Stored plus buffered counts keyed by ``(project_id, bucket_start)``.

    One Redis round trip per node, then one SQL statement.
    """
    cells = read_stats(project_ids, [stat], environment, rollup, buckets)
    return {(pk, epoch): count for (pk, _, epoch), count in cells.items()}


def read_stats(
    project_ids: Sequence[int],
    stats: Sequence[int],
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int, int], int]:
    """Stored plus buffered counts of several stats keyed by ``(project_id, stat, bucket_start)``.

    One Redis round trip per node, then one SQL statement, however many stats.
    """
    config = _config()
    ids = sorted(set(project_ids))
    fields: defaultdict[int, list[str]] = defaultdict(list)
    for project_id in ids:
        shard = _shard(config, project_id)
        fields[shard] += [
            _field(project_id, stat, rollup, e, environment) for stat in stats for e in buckets
        ]
    batches = (_buffered(fields) if ids and stats else None) or {}
    cells, applied = database.read_cells(
        ids, stats, environment, rollup, buckets[0], buckets[-1], sorted(batches)
    )
    pending: Counter[str] = Counter()
    for batch_id, deltas in batches.items():
        if batch_id not in applied:
            pending.update(deltas)
    for field, delta in pending.items():
        pk, stat, _, epoch, _ = field.split(":", 4)
        key = (int(pk), int(stat), int(epoch))
        cells[key] = cells.get(key, 0) + delta
    return cells


def environment_seen(project_ids: Iterable[int], environment: str) -> bool:
    """Whether an increment with ``environment`` is buffered for any of the projects.

    A batch's marker stays in Redis until its counts are committed, so
    "not buffered" checked before "not stored" misses nothing.
    """
    config = _config()
    fields: defaultdict[int, list[str]] = defaultdict(list)
    for project_id in project_ids:
        fields[_shard(config, project_id)].append(f"e:{project_id}:{environment}")
    if not fields:
        return False
    return bool(_buffered(fields))


@dataclass
class FlushResult:
    """What :func:`flush` did.

    ``rows``: database rows written; ``batches``: batches applied (``skipped``:
    claimed batches found already applied, so only acknowledged); ``shards``:
    shards that had something to flush; ``busy``: shards another flusher held;
    ``failed``: shards Redis could not serve; ``lag``: age in seconds of the
    oldest increment flushed (None when nothing was).
    """

    rows: int = 0
    batches: int = 0
    skipped: int = 0
    shards: int = 0
    busy: int = 0
    failed: int = 0
    lag: float | None = None


def flush() -> FlushResult:
    """Move every buffered increment into the database (see the module docstring).

    Every shard is claimed at once (one round trip per Redis node) and every
    batch applied in one database transaction. Shards another flusher holds
    are left to it (``busy``). Shards Redis cannot serve are counted in
    ``failed`` and, after the others are done, raise :class:`FlushIncomplete`
    (its ``result`` says what was done); nothing is lost, a later flush
    picks them up.
    """
    config = _config()
    result = FlushResult()
    token = uuid.uuid4().hex
    lease_ms = int(float(config["LEASE_SECONDS"]) * 1000)
    now = _now_ms()
    begins: list[Call] = []
    for shard in range(int(config["SHARDS"])):
        tag = _tag(config, shard)
        keys = [f"{tag}:lease", f"{tag}:live", f"{tag}:batches"]
        begins.append((shard, keys, [token, lease_ms, now, f"{tag}:batch:"]))
    # 1. Claim: per shard, take the lease and rename live to a new batch.
    claimed: dict[int, list[str]] = {}
    for (shard, _, _), reply in zip(begins, _per_node(config, _BEGIN, begins), strict=True):
        if isinstance(reply, Exception):
            result.failed += 1
        elif reply is None:
            result.busy += 1
        elif reply:
            claimed[shard] = [raw.decode() for raw in reply]
    if claimed:
        try:
            _reached("claimed")
            _apply(config, claimed, token, lease_ms, result)
        finally:
            # 5. Release the leases still ours (a dead flusher's expire).
            releases = [(shard, [f"{_tag(config, shard)}:lease"], [token]) for shard in claimed]
            _per_node(config, _RELEASE, releases)
    if result.failed:
        raise FlushIncomplete(
            f"Redis is unavailable for {result.failed} shards; they are flushed later", result
        )
    return result


def _apply(
    config: dict[str, Any],
    claimed: dict[int, list[str]],
    token: str,
    lease_ms: int,
    result: FlushResult,
) -> None:
    # 2. Read every claimed batch.
    reads: list[Call] = [
        (shard, [f"{_tag(config, shard)}:batch:{batch_id}"], [])
        for shard, ids in claimed.items()
        for batch_id in ids
    ]
    contents = _per_node(config, _HGETALL, reads)
    _reached("read")
    batches: dict[str, list[Row]] = {}
    firsts: list[int] = []
    where: dict[str, int] = {}
    failed_shards: set[int] = set()
    for (shard, keys, _), content in zip(reads, contents, strict=True):
        if isinstance(content, Exception):
            failed_shards.add(shard)
            continue
        batch_id = keys[0].rsplit(":", 1)[1]
        rows, first_ms = _rows(dict(zip(content[::2], content[1::2], strict=True)))
        batches[batch_id] = rows
        where[batch_id] = shard
        if first_ms is not None:
            firsts.append(first_ms)
    result.failed += len(failed_shards)
    # A shard that could not be read entirely waits for the next flush.
    batches = {b: rows for b, rows in batches.items() if where[b] not in failed_shards}
    if not batches:
        return
    # 3. One transaction: the counts and the ids of the batches they came from.
    applied, written = database.apply_batches(
        batches, int(time.time()), before_commit=lambda: _reached("applying")
    )
    _reached("committed")
    result.batches += len(applied)
    result.skipped += len(batches) - len(applied)
    result.rows += written
    result.shards += len({where[b] for b in batches})
    if applied and firsts:
        result.lag = max(0.0, time.time() - min(firsts) / 1000)
    # 4. Acknowledge: delete the batches and their ids, renew the leases.
    acks = [
        (
            where[batch_id],
            [
                f"{_tag(config, where[batch_id])}:batch:{batch_id}",
                f"{_tag(config, where[batch_id])}:batches",
                f"{_tag(config, where[batch_id])}:lease",
            ],
            [batch_id, token, lease_ms],
        )
        for batch_id in batches
    ]
    _per_node(config, _ACK, acks)
    _reached("acked")


def _rows(content: dict[bytes, bytes]) -> tuple[list[Row], int | None]:
    rows: list[Row] = []
    first_ms: int | None = None
    for field, value in content.items():
        if field == b"~t":
            first_ms = int(value)
            continue
        key = _parse_field(field)
        if key is None:
            continue
        project_id, stat, rollup, epoch, environment = key
        count = int(value)
        if count:
            rows.append((project_id, stat, environment, rollup, epoch, count))
    return rows, first_ms


def pending_batch_ids() -> set[str]:
    """Ids of every claimed, not yet acknowledged batch (one round trip per node)."""
    config = _config()
    calls: list[Call] = []
    for shard in range(int(config["SHARDS"])):
        tag = _tag(config, shard)
        # A READ asking for no field: just the ids.
        calls.append((shard, [f"{tag}:live", f"{tag}:batches"], [f"{tag}:batch:"]))
    ids: set[str] = set()
    for reply in _per_node(config, _READ, calls):
        if isinstance(reply, Exception):
            raise reply if isinstance(reply, BufferUnavailable) else _unavailable(reply)
        ids.update(reply[position].decode() for position in range(2, len(reply), 2))
    return ids
