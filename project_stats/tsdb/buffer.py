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
so every script below touches a single slot, and the same names serve one
Redis and a cluster. Writes spread over the shards by project.

A write closes the live hash (as step 1 below would) before adding to it
when the hash is full (``FLUSH_MAX_ROWS`` fields) or was created by another
incarnation of the server: Redis restored from a snapshot or failed over
brings back a live hash whose batch id a flush may have applied already.
Writes are never resent by the client (a lost reply would count twice), and
a write that would overflow a bucket takes back what it added.

Behind Redis Sentinel (a ``redis+sentinel://`` URL, see :func:`sentinel_address`)
every new connection asks the sentinels for the primary, so after a failover
writes reach the promoted replica: another incarnation, whose live hashes
are closed as above. A demoted primary's READONLY is a refusal (not run).

Flush protocol (each step names the crash point right after it; :data:`crash_hook`
is called there so tests can kill the process). A flush claims ``CLAIM_SHARDS``
shards at a time (several flushers share the shards that way); each step runs
on all the shards of the claim at once, one round trip per Redis node::

    1. BEGIN script, per shard: take the lease (or leave the shard: another
       flusher has it), rename ``live`` to the batch key of its ``~id`` and
       record the id, list every claimed id (older ones too: a flusher that
       died left them, a write closed them).                           "claimed"
    2. HGETALL the batches of one transaction: whole batches, at most
       ``FLUSH_MAX_ROWS`` rows (their HLEN says).                       "read"
    3. That database transaction: insert each batch id into AppliedBatch
       (already there: that batch is in the database, add nothing of it),
       add the counts of the others (a bucket passing 2**63 - 1 is clamped,
       logged).                                   "applying" (before the commit)
                                                   "committed" (after it)
    4. Once committed (the caller's transaction, if flush runs in one), ACK
       script per batch: delete the batch key and its id, renew the lease.
                                                                        "acked"
       Steps 2 to 4 repeat for the claim's next transaction.
    5. RELEASE script, per shard: record the flush, drop the lease if it is
       still ours.

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
two reads. Each hash is asked only for the buckets its index lists.

A read of many series is cut into slices of a shard's projects, one script
each, so that no script holds Redis long (:data:`READ_SCRIPT_FIELDS`), sent
a few at a time (:data:`READ_ROUND_FIELDS`) so that writers get in between.
A flush may claim or commit a batch between two slices: each slice still
returns every delta of its projects (all their cells) atomically with the
batch ids, and the one SQL statement, after the last slice, says which of
all those ids are applied, so each cell is counted once, from the database
or from the one script that read it, as with several shards.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..conf import project_stats_settings
from . import database, redis_config
from .database import Row

logger = logging.getLogger("project_stats.flush")

__all__ = [
    "BufferUnavailable",
    "FlushIncomplete",
    "FlushResult",
    "ShardStats",
    "crash_hook",
    "enabled",
    "environment_seen",
    "flush",
    "pending_batch_ids",
    "read",
    "shard_stats",
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


# Scripts. Each touches the keys of one shard only (one cluster slot). A
# hash's bucket index ("<hash>:b", a zset of "rollup:epoch" scored by epoch)
# moves with it, so a read asks only for buckets that hold deltas.

# KEYS: live, batches. ARGV: an id for the live hash should this write
# create it, the most fields a hash takes before it is closed, the batch key
# prefix, the number of fields given, "rollup:epoch" index entries joined by
# ";", then "field NUL delta NUL field NUL delta..." as one argument (the
# client packs one string instead of thousands; environment markers, delta 0,
# come last). Returns the id of the hash written to.
#
# The shebang makes Redis 7 check its memory before the script runs: a full
# Redis (maxmemory, noeviction) refuses the whole script with OOM, so a write
# is either refused untouched or runs to its end, never stopped half-way.
# Times are Redis's own (TIME), never the writer's: app servers' clocks
# disagree, and one running ahead would trim the others' buckets from the
# index.
#
# A live hash is closed (renamed to a claimed batch, as a flush would) before
# this write when it is full, or when it was written by another incarnation
# of the server: Redis restored from a snapshot or failed over to a replica
# brings back a live hash whose id a flush may already have applied, and
# deltas added to it now would be skipped with it. Closed, it is applied
# once, or skipped if it was.
#
# A bucket that would pass 2**63 - 1 makes HINCRBY fail: the deltas written
# so far are taken back and the hash left as it was, so the whole script
# records nothing (Redis does not undo a failed script's writes itself). Any
# other refusal of an HINCRBY is taken back the same way and answered as
# Redis's own error, never as an overflow.
_WRITE_BODY = """
local live, batches = KEYS[1], KEYS[2]
local fresh, prefix = ARGV[1], ARGV[3]
local cap, count = tonumber(ARGV[2]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = string.format('%d', clock[1] * 1000 + math.floor(clock[2] / 1000))
local short_prefix = string.sub(live, 1, #live - 4) .. 'r:'
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local id = redis.call('HGET', live, '~id')
if id and (redis.call('HGET', live, '~inc') ~= run or redis.call('HLEN', live) + count > cap) then
  redis.call('RENAME', live, prefix .. id)
  if redis.call('EXISTS', live .. ':b') == 1 then
    redis.call('RENAME', live .. ':b', prefix .. id .. ':b')
  end
  redis.call('ZADD', batches, now, id)
  id = false
end
if not id and count > 0 then
  redis.call('HSET', live, '~id', fresh, '~t', now, '~inc', run)
  id = fresh
end
-- Every HINCRBY of the call, in order: {key, field, delta}, to take back.
local done = {}
local function undo()
  for k = #done, 1, -3 do
    local key, field, delta = done[k - 2], done[k - 1], done[k]
    if delta ~= '0' and redis.call('HINCRBY', key, field, '-' .. delta) == 0 then
      redis.call('HDEL', key, field)
    end
  end
  if id == fresh then redis.call('DEL', live) end
end
-- Nil when added; else the error reply to return, everything taken back.
local function add(key, field, delta)
  local reply = redis.pcall('HINCRBY', key, field, delta)
  if type(reply) == 'table' and reply.err then
    undo()
    if string.find(reply.err, 'overflow', 1, true) then
      return redis.error_reply('PSOVERFLOW ' .. field)
    end
    return reply
  end
  done[#done + 1] = key
  done[#done + 1] = field
  done[#done + 1] = delta
  return nil
end
local packed = ARGV[6]
local position, length = 1, #packed
while position <= length do
  local gap = string.find(packed, '\\0', position, true)
  local stop = string.find(packed, '\\0', gap + 1, true) or length + 1
  local field = string.sub(packed, position, gap - 1)
  local refused = add(live, field, string.sub(packed, gap + 1, stop - 1))
  if refused then return refused end
  position = stop + 1
end
-- Redis-only rollups: "rollup:epoch:group NUL field NUL delta" triplets,
-- each bucket and group of projects a hash of its own that expires its
-- rollup's retention after its last write; a zset per rollup lists the
-- buckets (score: their expiry).
local ttls = {}
for rollup, ttl in string.gmatch(ARGV[8], '(%d+)=(%d+)') do ttls[rollup] = tonumber(ttl) end
local buckets = {}
packed, position, length = ARGV[7], 1, #ARGV[7]
while position <= length do
  local first = string.find(packed, '\\0', position, true)
  local second = string.find(packed, '\\0', first + 1, true)
  local stop = string.find(packed, '\\0', second + 1, true) or length + 1
  local bucket = string.sub(packed, position, first - 1)
  local field = string.sub(packed, first + 1, second - 1)
  local refused = add(short_prefix .. bucket, field, string.sub(packed, second + 1, stop - 1))
  if refused then return refused end
  buckets[bucket] = true
  position = stop + 1
end
local indexed = {}
for bucket in pairs(buckets) do
  local rollup, epoch = string.match(bucket, '^(%d+):([^:]+):')
  local ttl = ttls[rollup]
  redis.call('PEXPIRE', short_prefix .. bucket, ttl)
  indexed[rollup .. ':' .. epoch] = true
end
for entry in pairs(indexed) do
  local rollup, epoch = string.match(entry, '^(%d+):(.*)$')
  local ttl = ttls[rollup]
  local index = short_prefix .. rollup
  redis.call('ZADD', index, tonumber(now) + ttl, epoch)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  redis.call('PEXPIRE', index, ttl)
end
for entry in string.gmatch(ARGV[5], '[^;]+') do
  redis.call('ZADD', live .. ':b', string.match(entry, ':(.*)'), entry)
end
return id or ''
"""
_WRITE = "#!lua\n" + _WRITE_BODY

# The same write for taking back part of a refused one (negative deltas):
# it must run even when Redis is full, or the call could not keep its promise
# that nothing of it stays recorded.
_WRITE_BACK = "#!lua flags=allow-oom\n" + _WRITE_BODY

# KEYS: live. ARGV: the id a write returned ('' when it wrote no live hash),
# its packed fields and deltas, its packed Redis-only triplets. Takes that
# write back if its hash is still live (fields it created are removed);
# returns 0, touching nothing, when a flush claimed the hash meanwhile.
# Allowed to run when Redis is full: it only lowers what a write just added.
_UNDO = """#!lua flags=allow-oom
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], '~id') ~= ARGV[1] then return 0 end
local function take(key, field, delta)
  if delta ~= '0' and redis.call('HINCRBY', key, field, '-' .. delta) == 0 then
    redis.call('HDEL', key, field)
  end
end
local packed = ARGV[2]
local position, length = 1, #packed
while position <= length do
  local gap = string.find(packed, '\\0', position, true)
  local stop = string.find(packed, '\\0', gap + 1, true) or length + 1
  take(KEYS[1], string.sub(packed, position, gap - 1), string.sub(packed, gap + 1, stop - 1))
  position = stop + 1
end
local short_prefix = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:'
packed, position, length = ARGV[3], 1, #ARGV[3]
while position <= length do
  local first = string.find(packed, '\\0', position, true)
  local second = string.find(packed, '\\0', first + 1, true)
  local stop = string.find(packed, '\\0', second + 1, true) or length + 1
  take(short_prefix .. string.sub(packed, position, first - 1),
    string.sub(packed, first + 1, second - 1), string.sub(packed, second + 1, stop - 1))
  position = stop + 1
end
return 1
"""

# The flush's scripts may run when Redis is full (allow-oom): flushing is
# what frees its memory, and a full Redis that could not be flushed would
# refuse writes until someone gave it more.
#
# KEYS: lease, live, batches. ARGV: token, lease ms, batch key prefix.
# The batch keeps the id the live hash got when it was created, which reads
# have seen already: a read that found these deltas live knows them by it.
_BEGIN = """#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local id = redis.call('HGET', KEYS[2], '~id')
if id then
  local clock = redis.call('TIME')
  local now = string.format('%d', clock[1] * 1000 + math.floor(clock[2] / 1000))
  redis.call('RENAME', KEYS[2], ARGV[3] .. id)
  if redis.call('EXISTS', KEYS[2] .. ':b') == 1 then
    redis.call('RENAME', KEYS[2] .. ':b', ARGV[3] .. id .. ':b')
  end
  redis.call('ZADD', KEYS[3], now, id)
end
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
if #ids == 0 then redis.call('DEL', KEYS[1]) end
return ids
"""

# KEYS: batch key, batches, lease. ARGV: batch id, token, lease ms.
_ACK = """#!lua flags=allow-oom
redis.call('DEL', KEYS[1], KEYS[1] .. ':b')
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return 1
"""

_HGETALL = """
return redis.call('HGETALL', KEYS[1])
"""

_HLEN = """
return redis.call('HLEN', KEYS[1])
"""

# KEYS: lease, flushed. ARGV: token, then what this flush did to the shard
# (when, seconds, rows), kept for ``project_stats_flush --stats``.
_RELEASE = """#!lua flags=allow-oom
redis.call('HSET', KEYS[2], 'at', ARGV[2], 'seconds', ARGV[3], 'rows', ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: live, batches, flushed. ARGV: batch key prefix. Returns {fields
# live, its first write (ms) or false, {id, claim time, fields, ...}, the
# last flush's {at, seconds, rows} or {}}.
_STATS = """
local claimed = {}
for _, pair in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do
  claimed[#claimed + 1] = pair
end
local batches = {}
for i = 1, #claimed, 2 do
  batches[#batches + 1] = claimed[i]
  batches[#batches + 1] = claimed[i + 1]
  batches[#batches + 1] = redis.call('HLEN', ARGV[1] .. claimed[i])
end
return {redis.call('HLEN', KEYS[1]), redis.call('HGET', KEYS[1], '~t'), batches,
  redis.call('HMGET', KEYS[3], 'at', 'seconds', 'rows')}
"""

# The end of the read scripts: ``get`` (defined by each) applied to the live
# hash and every claimed batch (ARGV[1] is the batch key prefix), with ids.
_EACH_HASH = """
local result = {redis.call('HGET', KEYS[1], '~id'), get(KEYS[1])}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  result[#result + 1] = id
  result[#result + 1] = get(ARGV[1] .. id)
end
return result
"""

# KEYS: live, batches. ARGV: batch key prefix, then the fields wanted.
# Returns {live id, live values, id1, values1, id2, values2, ...}; HMGET in
# slices because Lua's unpack has a small stack. For fields named one by one
# (environment markers) and, with none, the claimed ids.
_FIELDS = (
    """
local function get(key)
  local values = {}
  for i = 2, #ARGV, 500 do
    local part = redis.call('HMGET', key, unpack(ARGV, i, math.min(i + 499, #ARGV)))
    for j = 1, #part do values[#values + 1] = part[j] end
  end
  return values
end
"""
    + _EACH_HASH
)

# Lua: appends to ``out`` the fields of ``fields`` that ``key`` holds, each
# followed by its value (HMGET in slices: Lua's unpack has a small stack).
_FOUND = """
local function found(key, fields, out)
  for i = 1, #fields, 500 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 499, #fields)))
    for j = 1, #part do
      if part[j] then
        out[#out + 1] = fields[i + j - 1]
        out[#out + 1] = part[j]
      end
    end
  end
end
"""

# KEYS: live, batches. ARGV: batch key prefix, rollup, first and last bucket
# start, the stat codes joined by ";", ":environment", then project ids. Returns {live id,
# {field, value, ...}, id1, {...}, ...} with only the fields that hold a
# delta: each hash's index names the buckets it has in the range, so the
# work grows with what is buffered, not with the series asked for. A hash
# without an index (written by an earlier version) is asked for every bucket.
_READ = (
    _FOUND
    + """
local prefix, rollup, first, last = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local stats = {}
for stat in string.gmatch(ARGV[5], '[^;]+') do stats[#stats + 1] = stat end
local function get(key)
  local epochs = {}
  if redis.call('EXISTS', key .. ':b') == 1 then
    for _, entry in ipairs(redis.call('ZRANGEBYSCORE', key .. ':b', first, last)) do
      local r, e = string.match(entry, '^(%d+):(.*)$')
      if r == rollup then epochs[#epochs + 1] = e end
    end
  elseif redis.call('EXISTS', key) == 1 then
    for e = first, last, tonumber(rollup) do epochs[#epochs + 1] = string.format('%d', e) end
  end
  local out, fields = {}, {}
  for i = 7, #ARGV do
    for _, stat in ipairs(stats) do
      for _, e in ipairs(epochs) do
        fields[#fields + 1] = ARGV[i] .. ':' .. stat .. ':' .. rollup .. ':' .. e .. ARGV[6]
      end
    end
  end
  found(key, fields, out)
  return out
end
"""
    + _EACH_HASH
)

# KEYS: live (for the shard's slot). ARGV: rollup, first and last bucket
# start, the stat codes joined by ";", ":environment", then per group of
# projects "group=pk,pk,...". Reads a Redis-only rollup: the buckets its index
# lists in the range, and in each the fields of these series. Returns
# {epoch, {field, value, ...}, ...}.
_READ_SHORT = (
    _FOUND
    + """
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:' .. ARGV[1] .. ':'
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
local stats = {}
for stat in string.gmatch(ARGV[4], '[^;]+') do stats[#stats + 1] = stat end
local groups = {}
for i = 6, #ARGV do
  local group, ids = string.match(ARGV[i], '^([^=]+)=(.*)$')
  local fields = {}
  for pk in string.gmatch(ids, '[^,]+') do
    for _, stat in ipairs(stats) do fields[#fields + 1] = pk .. ':' .. stat .. ARGV[5] end
  end
  groups[#groups + 1] = {':' .. group, fields}
end
local index = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:' .. ARGV[1]
local result = {}
for _, epoch in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local e = tonumber(epoch)
  if e >= first and e <= last then
    local out = {}
    for _, group in ipairs(groups) do found(prefix .. epoch .. group[1], group[2], out) end
    if #out > 0 then
      result[#result + 1] = epoch
      result[#result + 1] = out
    end
  end
end
return result
"""
)

# KEYS: live (for the shard's slot). ARGV: the Redis-only rollups joined by
# ";", then per group of projects "group=pk,pk,...". Deletes those projects'
# fields from every bucket of those rollups; returns how many fields went.
_FORGET_SHORT = """
local base = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:'
local groups = {}
for i = 2, #ARGV do
  local group, ids = string.match(ARGV[i], '^([^=]+)=(.*)$')
  local wanted = {}
  for pk in string.gmatch(ids, '[^,]+') do wanted[pk] = true end
  groups[group] = wanted
end
local gone = 0
for rollup in string.gmatch(ARGV[1], '[^;]+') do
  for _, epoch in ipairs(redis.call('ZRANGE', base .. rollup, 0, -1)) do
    for group, wanted in pairs(groups) do
      local key = base .. rollup .. ':' .. epoch .. ':' .. group
      for _, field in ipairs(redis.call('HKEYS', key)) do
        if wanted[string.match(field, '^(%d+):')] then
          gone = gone + redis.call('HDEL', key, field)
        end
      end
    end
  end
end
return gone
"""

_SHA = {
    source: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for source in (
        _WRITE,
        _WRITE_BACK,
        _UNDO,
        _BEGIN,
        _ACK,
        _HGETALL,
        _HLEN,
        _RELEASE,
        _STATS,
        _FIELDS,
        _READ,
        _READ_SHORT,
        _FORGET_SHORT,
    )
}


# Scripts that add or subtract: run twice, they would count twice. Never
# resent, not even after a cluster redirection.
_NEVER_RESENT = frozenset((_WRITE, _WRITE_BACK, _UNDO))


# Clients: one per configuration, shared by the process (redis-py pools are
# thread-safe and reset themselves in a forked child).
_CLIENTS: dict[tuple[str, bool, float], Any] = {}

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelAddress:
    """A ``redis+sentinel://`` URL's parts.

    ``username`` and ``password`` authenticate on the primary; the
    sentinels get ``sentinel_username`` and ``sentinel_password`` (the URL's
    query), or nothing.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None


def is_sentinel(config: dict[str, Any]) -> bool:
    url = config.get("URL")
    return isinstance(url, str) and url.startswith(SENTINEL_SCHEME)


def sentinel_address(url: str) -> SentinelAddress:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    (query: ``sentinel_username``, ``sentinel_password``); ``ValueError`` says what is wrong."""
    from urllib.parse import parse_qsl, unquote

    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"it does not start with {SENTINEL_SCHEME}")
    rest, _, query = url[len(SENTINEL_SCHEME) :].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        username = unquote(name) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        if entry.startswith("["):  # [IPv6]:port
            host, bracket, port = entry[1:].partition("]")
            port = port.removeprefix(":") if bracket else "!"
        else:
            host, colon, port = entry.partition(":")
            if not colon:
                port = str(SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not a sentinel's host:port")
        sentinels.append((host, int(port)))
    parts = path.split("/")
    service = unquote(parts[0])
    if not service:
        raise ValueError("it names no service (the name the sentinels monitor)")
    db = parts[1] if len(parts) > 1 else "0"
    if len(parts) > 2 or not db.isdigit():
        raise ValueError(f"the path after the service must be a database number, got {path!r}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown options {', '.join(unknown)} (known: sentinel_username, sentinel_password)"
        )
    return SentinelAddress(
        tuple(sentinels),
        service,
        int(db),
        username,
        password,
        options.get("sentinel_username") or None,
        options.get("sentinel_password") or None,
    )


def _sentinel_client(url: str, options: dict[str, Any], retry: Any) -> Any:
    """The client of the primary the sentinels of ``url`` name, asked on every new connection."""
    from redis import Connection
    from redis.sentinel import Sentinel, SentinelManagedConnection

    class PrimaryConnection(SentinelManagedConnection):
        """A connection to the sentinels' primary that reads READONLY as Redis's reply.

        redis-py turns it into a ``ConnectionError``, which would make a write
        refused by a demoted primary look "sent, maybe run", and the replies
        pipelined after it lost. :func:`_per_node` disconnects the connection
        instead, so the next one asks the sentinels again.
        """

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            return Connection.read_response(self, *args, **kwargs)

    address = sentinel_address(url)
    sentinel = Sentinel(
        address.sentinels,
        sentinel_kwargs={
            **options,
            "username": address.sentinel_username,
            "password": address.sentinel_password,
            "retry": retry,
        },
    )
    return sentinel.master_for(
        address.service,
        connection_class=PrimaryConnection,
        db=address.db,
        username=address.username,
        password=address.password,
        retry=retry,
        **options,
    )


def _client(config: dict[str, Any]) -> Any:
    key = (str(config["URL"]), bool(config["CLUSTER"]), float(config["SOCKET_TIMEOUT"]))
    client = _CLIENTS.get(key)
    if client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        url, cluster, timeout = key
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        # No retry of a command whose connection broke: a write script that
        # ran before its reply was lost would run twice. A pooled socket to a
        # restarted Redis is replaced before it is used (the pool checks it),
        # so a retry would buy little.
        retry = Retry(NoBackoff(), 0)
        if cluster:
            # The cluster client gives its nodes' connections no retries.
            client = redis.RedisCluster.from_url(url, **options)
        elif url.startswith(SENTINEL_SCHEME):
            # A new connection asks the sentinels for the primary first (a
            # failover is found that way); none to be had is "not run".
            client = _sentinel_client(url, options, retry)
        else:
            client = redis.Redis.from_url(url, retry=retry, **options)
        _CLIENTS[key] = client
    return client


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


class _Failed(BufferUnavailable):
    """A script that did not answer; ``sent``: Redis may have run it."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def _unavailable(error: BaseException, *, sent: bool) -> _Failed:
    # The class name is enough to diagnose; the message may name hosts.
    return _Failed(f"Redis is unavailable ({type(error).__name__})", sent=sent)


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

    Returns each call's reply, or the exception it met: a ``ResponseError``
    Redis answered (the script did not run, or, ours, undid itself), or a
    :class:`_Failed` whose ``sent`` says whether Redis may have run it (the
    connection broke or timed out after the pipeline was sent) or certainly
    did not (no connection could be made). Nothing is sent twice.
    """
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        MovedError,
        NoScriptError,
        ReadOnlyError,
        RedisClusterException,
        RedisError,
        ResponseError,
        TryAgainError,
    )

    # Cluster clients raise RedisClusterException (not a RedisError) when no
    # node answers, from their construction on.
    failures = (RedisError, RedisClusterException)
    try:
        client = _client(config)
    except failures as error:
        return [_unavailable(error, sent=False) for _ in calls]
    groups: dict[int, tuple[Any, list[int]]] = {}
    if config["CLUSTER"]:
        for index, (_, keys, _args) in enumerate(calls):
            try:
                node = client.get_node_from_key(keys[0])
                node_client = client.get_redis_connection(node)
            except failures as error:
                logger.debug("No node for %s: %r", keys[0], error)
                node_client = None
            groups.setdefault(id(node_client), (node_client, []))[1].append(index)
    else:
        groups[0] = (client, list(range(len(calls))))

    # A write waits for its replicas on the same connection (WAIT covers the
    # connection's own writes): a failover then keeps what it acknowledged.
    replicas = int(config.get("WAIT_REPLICAS") or 0) if source == _WRITE else 0
    replies: list[Any] = [None] * len(calls)
    for node_client, indexes in groups.values():
        if node_client is None:
            for index in indexes:
                replies[index] = _Failed("no Redis Cluster node serves this shard", sent=False)
            continue
        todo = indexes
        for _attempt in range(2):
            pool = node_client.connection_pool
            try:
                # Connected (and checked) before anything is sent: a failure
                # here certainly ran nothing. Behind Sentinel a new connection
                # asks the sentinels for the primary first (no answer, or a
                # primary that cannot be reached, fails here too).
                connection = pool.get_connection()
            except failures as error:
                for index in todo:
                    replies[index] = _unavailable(error, sent=False)
                break
            # A pipeline of our own on that connection: one write, the
            # replies read in order, nothing ever resent.
            results: list[Any] = []
            try:
                sha = _SHA[source]
                commands: list[tuple[Any, ...]] = [
                    ("EVALSHA", sha, len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in todo
                ]
                if replicas:
                    timeout_ms = max(1, round(float(config["WAIT_TIMEOUT"]) * 1000))
                    commands.append(("WAIT", replicas, timeout_ms))
                connection.send_packed_command(connection.pack_commands(commands))
                for _ in todo:
                    try:
                        results.append(connection.read_response())
                    except ResponseError as error:
                        results.append(error)
                if replicas:
                    try:
                        acknowledged = connection.read_response()
                    except ResponseError as error:
                        acknowledged = error
                    if not isinstance(acknowledged, int) or acknowledged < replicas:
                        # Run on the primary, not known to be on a replica:
                        # a failover could lose it, so "may have been recorded".
                        said = (
                            f"{acknowledged} of {replicas}"
                            if isinstance(acknowledged, int)
                            else f"none of {replicas} (WAIT refused: {acknowledged})"
                        )
                        shortfall = _Failed(
                            f"Redis ran the write but {said} replicas acknowledged it "
                            "within WAIT_TIMEOUT",
                            sent=True,
                        )
                        results = [r if isinstance(r, Exception) else shortfall for r in results]
                if any(isinstance(result, ReadOnlyError) for result in results):
                    # A demoted primary (the sentinels' answer came before
                    # the failover, or this connection did): it refused
                    # those scripts, ran none of them. Closed before it goes
                    # back to the pool: the next connection asks the sentinels.
                    connection.disconnect()
            except failures as error:
                connection.disconnect()  # replies may still be on the way
                for index in todo:
                    replies[index] = _unavailable(error, sent=True)
                break
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
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
            except failures as error:
                for index in missing:
                    replies[index] = _unavailable(error, sent=False)
                break
            todo = missing
        for index in indexes:
            reply = replies[index]
            if source not in _NEVER_RESENT and isinstance(
                reply, AskError | TryAgainError | ClusterDownError
            ):
                # A slot that moved (or a cluster healing): the command was
                # refused, not run; the cluster client follows the
                # redirection. Writes are not resent: what the cluster client
                # retries on its own could run twice.
                _, keys, args = calls[index]
                try:
                    replies[index] = _eval(client, source, keys, args)
                except failures as error:
                    replies[index] = _unavailable(error, sent=True)
            elif isinstance(reply, MovedError | AskError | TryAgainError | ClusterDownError):
                replies[index] = _unavailable(reply, sent=False)
            elif isinstance(reply, RedisError) and not isinstance(reply, ResponseError):
                replies[index] = _unavailable(reply, sent=True)
    return replies


def _parse_field(field: bytes) -> tuple[int, int, int, int, str] | None:
    text = field.decode()
    if text[0] in "e~":  # environment markers and the hash's own fields
        return None
    project_id, stat, rollup, epoch, environment = text.split(":", 4)
    return int(project_id), int(stat), int(rollup), int(epoch), environment


def _now_ms() -> int:
    return int(time.time() * 1000)


_OVERFLOW = "PSOVERFLOW "


@dataclass
class _Part:
    """One write script's share of a :func:`write`: a shard's rows (or some of them)."""

    shard: int
    rows: list[Row]
    packed: str
    short: str = ""  # Redis-only rollups' "rollup:epoch:group NUL field NUL delta" triplets

    def stored_rows(self, short: dict[int, int]) -> list[Row]:
        """The rows of rollups the database keeps."""
        return [row for row in self.rows if row[3] not in short]


def _parts(config: dict[str, Any], rows: Sequence[Row], short: dict[int, int]) -> list[_Part]:
    """Rows per shard, in parts of at most ``FLUSH_MAX_ROWS`` fields."""
    shards = int(config["SHARDS"])
    cap = int(config["FLUSH_MAX_ROWS"])
    per_shard: defaultdict[int, list[Row]] = defaultdict(list)
    for row in rows:
        per_shard[row[0] % shards].append(row)
    parts: list[_Part] = []
    for shard, shard_rows in per_shard.items():
        for offset in range(0, len(shard_rows), cap):
            chunk = shard_rows[offset : offset + cap]
            fields: list[str] = []
            triplets: list[str] = []
            markers: set[str] = set()
            for project_id, stat, environment, rollup, epoch, count in chunk:
                if rollup in short:
                    triplets += (
                        f"{rollup}:{epoch}:{_group(config, project_id)}",
                        f"{project_id}:{stat}:{environment}",
                        str(count),
                    )
                else:
                    fields += (f"{project_id}:{stat}:{rollup}:{epoch}:{environment}", str(count))
                if environment:
                    markers.add(f"e:{project_id}:{environment}")
            for marker in markers:  # last: a failed write never has to take them back
                fields += (marker, "0")
            parts.append(_Part(shard, chunk, "\0".join(fields), "\0".join(triplets)))
    return parts


def _write_call(config: dict[str, Any], part: _Part, fresh: str, short: dict[int, int]) -> Call:
    tag = _tag(config, part.shard)
    entries = ";".join(sorted({f"{row[3]}:{row[4]}" for row in part.rows if row[3] not in short}))
    return (
        part.shard,
        [f"{tag}:live", f"{tag}:batches"],
        [
            f"{part.shard}-{fresh}",
            int(config["FLUSH_MAX_ROWS"]),
            f"{tag}:batch:",
            part.packed.count("\0") // 2 + 1 if part.packed else 0,
            entries,
            part.packed,
            part.short,
            ";".join(f"{rollup}={ttl}" for rollup, ttl in short.items()),
        ],
    )


def write(rows: Sequence[Row]) -> None:
    """Add ``rows`` (distinct keys, nonzero counts) to the buffer.

    One script per shard (per ``FLUSH_MAX_ROWS`` rows of a shard), all
    pipelined: one round trip per Redis node. Each script is atomic; a writer
    dying mid-call may have recorded some shards' parts and not others.

    A bucket whose buffered sum would pass 2**63 - 1 raises ``ValueError``
    and nothing of the call stays buffered. When a shard cannot take its part
    (unreachable, or refusing it: full, loading), ``ON_ERROR`` decides:
    ``"raise"`` takes back the parts other shards recorded and raises
    :class:`BufferUnavailable`, nothing of the call recorded (a retry counts
    it once); ``"database"`` writes that shard's rows straight to the
    database, but only when Redis certainly did not run them: after a lost
    reply or a timeout the write may have been recorded, and
    :class:`BufferUnavailable` says so instead of writing it twice. Should a
    take-back itself go unanswered, the error says which parts may stay.
    """
    if not rows:
        return
    config = _config()
    short = redis_only_rollups(config)
    parts = _parts(config, rows, short)
    fresh = uuid.uuid4().hex
    calls = [_write_call(config, part, f"{fresh}{i}", short) for i, part in enumerate(parts)]
    # A server that may evict counts or refuse INFO is refused (see redis_config).
    replies = redis_config.refusals(config, len(calls)) or _per_node(config, _WRITE, calls)
    done: list[tuple[_Part, str]] = []
    overflow: list[str] = []
    not_run: list[tuple[_Part, Exception]] = []
    unknown: list[tuple[_Part, Exception]] = []
    for part, reply in zip(parts, replies, strict=True):
        if isinstance(reply, _Failed):
            (unknown if reply.sent else not_run).append((part, reply))
        elif isinstance(reply, Exception):
            if str(reply).startswith(_OVERFLOW):
                overflow.append(str(reply)[len(_OVERFLOW) :])
            else:  # refused, nothing of it done (out of memory, loading, ...)
                not_run.append((part, reply))
        else:
            done.append((part, reply.decode()))
    if overflow:
        raise ValueError(
            f"the buffered count of {overflow[0]} would pass 2**63 - 1; "
            + _taken_back(config, done, unanswered=len(unknown))
        )
    if not (not_run or unknown):
        return
    recorded = f"{len(done)} of {len(parts)} parts of this call were recorded"
    if not_run and config["ON_ERROR"] == "database":
        logger.warning(
            "Redis unavailable for %d of %d parts of a write; writing them to the database.",
            len(not_run),
            len(parts),
        )
        # Redis-only rollups have no place in the database: lost with Redis.
        database.upsert([row for part, _ in not_run for row in part.stored_rows(short)])
        not_run = []
    if unknown:
        raise BufferUnavailable(
            f"{_describe(unknown[0][1])} after the write was sent: it may have been recorded "
            f"({len(unknown)} parts; {recorded})"
        )
    if not_run:
        raise BufferUnavailable(f"{_describe(not_run[0][1])}; " + _taken_back(config, done))


def _describe(error: Exception) -> str:
    if isinstance(error, BufferUnavailable):
        return str(error)
    denied = redis_config.permission_message(error)
    return denied or f"Redis refused the write ({type(error).__name__}: {error})"


def _taken_back(
    config: dict[str, Any], done: Sequence[tuple[_Part, str]], unanswered: int = 0
) -> str:
    """Take back ``done`` (see :func:`_take_back`); what the call recorded, in
    words. ``unanswered``: parts whose write went unanswered (it may have run)."""
    left = _take_back(config, done) + unanswered
    if not left:
        return "nothing of this call was recorded"
    return (
        f"{left} parts of this call could not be taken back (Redis did not answer) "
        "and may stay recorded"
    )


def _take_back(config: dict[str, Any], done: Sequence[tuple[_Part, str]]) -> int:
    """Undo the parts of a refused write that Redis recorded; how many may stay.

    A part whose live hash a flush claimed meanwhile is cancelled by the same
    deltas, negative, in the next live hash: the database gets both, and a
    read counts both. Both scripts run even when Redis is full. An undo whose
    reply is lost may have run: it is never followed by the negative deltas
    (that would take the part back twice), only counted as uncertain.
    """
    if not done:
        return 0
    undos = [
        (part.shard, [f"{_tag(config, part.shard)}:live"], [batch_id, part.packed, part.short])
        for part, batch_id in done
    ]
    claimed: list[_Part] = []
    left = 0
    for (part, _), reply in zip(done, _per_node(config, _UNDO, undos), strict=True):
        if isinstance(reply, Exception):
            logger.error("Could not take back part of a refused write: %s", reply)
            left += 1
        elif reply != 1:
            claimed.append(part)
    if not claimed:
        return left
    negative = [(*row[:5], -row[5]) for part in claimed for row in part.rows]
    short = redis_only_rollups(config)
    parts = _parts(config, negative, short)
    fresh = uuid.uuid4().hex
    calls = [_write_call(config, part, f"{fresh}{i}", short) for i, part in enumerate(parts)]
    for reply in _per_node(config, _WRITE_BACK, calls):
        if isinstance(reply, Exception):
            logger.error("Could not take back part of a refused write: %s", reply)
            left += 1
    return left


def _every_reply(config: dict[str, Any], source: str, calls: Sequence[Call]) -> list[Any]:
    """Every call's reply; the first failure raised as :class:`BufferUnavailable`."""
    replies = _per_node(config, source, calls)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply if isinstance(reply, BufferUnavailable) else _unavailable(reply, sent=False)
    return replies


def _answers(
    config: dict[str, Any], source: str, calls: Sequence[Call], fields: Sequence[int] = ()
) -> list[Any] | None:
    """Every call's reply, or None when Redis cannot answer one and
    ``READ_ON_ERROR`` is ``"database"`` (else :class:`BufferUnavailable`).

    With ``fields`` (asked by each call), in rounds (:func:`_in_rounds`).
    """
    try:
        if fields:
            return _in_rounds(config, source, calls, fields)
        return _every_reply(config, source, calls)
    except BufferUnavailable:
        if config["READ_ON_ERROR"] != "database":
            raise
        logger.warning("Redis unavailable; answering a read from the database alone.")
        return None


# The most fields (projects x stats x buckets) a read script asks of one
# hash: a shard's projects are read in slices of that many (one project at
# least). Measured with bench/stats_v2_buffered.py: about 0.8 us a field in
# a live hash of 36,000, so some 1.5 ms a hash.
READ_SCRIPT_FIELDS = 2_000
# The most fields the read scripts sent in one round trip ask together (one
# script at least): Redis runs a pipeline's scripts back to back, so writers
# wait for at most one round.
READ_ROUND_FIELDS = 8 * READ_SCRIPT_FIELDS


def _read_slices(
    config: dict[str, Any], project_ids: Iterable[int], width: int
) -> list[tuple[int, list[int]]]:
    """``(shard, project ids)`` per read script: each shard's projects in slices
    of at most ``READ_SCRIPT_FIELDS // width`` (``width``: fields per project).

    A project's cells all fall in one slice: one script reads all its deltas.
    """
    size = max(1, READ_SCRIPT_FIELDS // max(1, width))
    return [
        (shard, shard_ids[i : i + size])
        for shard, shard_ids in _by_shard(config, project_ids).items()
        for i in range(0, len(shard_ids), size)
    ]


def _in_rounds(
    config: dict[str, Any], source: str, calls: Sequence[Call], fields: Sequence[int]
) -> list[Any]:
    """:func:`_every_reply` of the read scripts ``calls`` (asking ``fields``
    each), sent in rounds of at most :data:`READ_ROUND_FIELDS` fields."""
    replies: list[Any] = []
    start = 0
    while start < len(calls):
        end, asked = start + 1, fields[start]
        while end < len(calls) and asked + fields[end] <= READ_ROUND_FIELDS:
            asked += fields[end]
            end += 1
        replies += _every_reply(config, source, calls[start:end])
        start = end
    return replies


def read(
    project_ids: Sequence[int],
    stat: int,
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int], int]:
    """Stored plus buffered counts keyed by ``(project_id, bucket_start)``.

    Read scripts in rounds, then one SQL statement (see :func:`read_stats`).
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

    One script per slice of a shard's projects (:func:`_read_slices`), sent
    in rounds (one round trip per node each; one round for a small read),
    then one SQL statement, however many stats. Redis looks up only the
    buckets its hashes hold in the range (their index), so a long series
    over many projects costs it what is buffered, not what is asked. The
    number of series is the caller's to bound (``MAX_TOTAL_POINTS``).

    A live hash is keyed by the id its batch will have: a flush may claim and
    commit it before the database is read, which then says so.
    """
    config = _config()
    ids = sorted(set(project_ids))
    slices = _read_slices(config, ids, len(stats) * len(buckets))
    codes = ";".join(str(stat) for stat in stats)
    if rollup in redis_only_rollups(config):
        return _read_short(config, slices, codes, environment, rollup, buckets)
    calls: list[Call] = []
    for shard, slice_ids in slices:
        tag = _tag(config, shard)
        calls.append(
            (
                shard,
                [f"{tag}:live", f"{tag}:batches"],
                [f"{tag}:batch:", rollup, buckets[0], buckets[-1], codes, f":{environment}"]
                + slice_ids,
            )
        )
    width = len(stats) * len(buckets)
    fields = [width * len(slice_ids) for _, slice_ids in slices]
    replies = (_answers(config, _READ, calls, fields) if calls and stats else None) or []
    batches: dict[str, Counter[tuple[int, int, int]]] = {}
    for reply in replies:
        for position in range(0, len(reply), 2):
            if reply[position] is None:
                continue  # no live hash
            found = reply[position + 1]
            deltas = batches.setdefault(reply[position].decode(), Counter())
            for field, value in zip(found[::2], found[1::2], strict=True):
                pk, stat, _, epoch, _ = field.split(b":", 4)
                deltas[(int(pk), int(stat), int(epoch))] += int(value)
    cells, applied = database.read_cells(
        ids, stats, environment, rollup, buckets[0], buckets[-1], sorted(batches)
    )
    for batch_id, deltas in batches.items():
        if batch_id not in applied:
            for key, delta in deltas.items():
                cells[key] = cells.get(key, 0) + delta
    return cells


def _read_short(
    config: dict[str, Any],
    slices: Sequence[tuple[int, list[int]]],
    codes: str,
    environment: str,
    rollup: int,
    buckets: Sequence[int],
) -> dict[tuple[int, int, int], int]:
    """A Redis-only rollup's counts, from Redis alone (one script per slice, in rounds).

    Raises :class:`BufferUnavailable` when Redis cannot answer, whatever
    ``READ_ON_ERROR`` says.
    """
    calls: list[Call] = [
        (
            shard,
            [f"{_tag(config, shard)}:live"],
            [
                rollup,
                buckets[0],
                buckets[-1],
                codes,
                f":{environment}",
                *_grouped(config, slice_ids),
            ],
        )
        for shard, slice_ids in slices
    ]
    # Not READ_ON_ERROR's fallback: the database holds nothing of these
    # rollups, so its answer would be zeros that look like counts.
    width = len(codes.split(";")) * len(buckets)
    fields = [width * len(slice_ids) for _, slice_ids in slices]
    replies = _in_rounds(config, _READ_SHORT, calls, fields) if calls and codes else []
    cells: dict[tuple[int, int, int], int] = {}
    for reply in replies:
        for position in range(0, len(reply), 2):
            epoch = int(reply[position])
            found = reply[position + 1]
            for field, value in zip(found[::2], found[1::2], strict=True):
                pk, stat, _ = field.split(b":", 2)
                cells[(int(pk), int(stat), epoch)] = int(value)
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
    calls: list[Call] = []
    for shard, wanted in fields.items():
        tag = _tag(config, shard)
        calls.append((shard, [f"{tag}:live", f"{tag}:batches"], [f"{tag}:batch:", *wanted]))
    replies = (_answers(config, _FIELDS, calls) if calls else None) or []
    return any(
        value is not None
        for reply in replies
        for position in range(1, len(reply), 2)
        for value in reply[position]
    )


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


def flush(shards: Iterable[int] | None = None) -> FlushResult:
    """Move every buffered increment into the database (see the module docstring).

    ``shards`` limits the flush to those shard numbers (default: all). They
    are claimed at once (one round trip per Redis node) and their batches
    applied in transactions of at most ``FLUSH_MAX_ROWS`` rows each (a batch
    is never split). Shards another flusher holds are left to it (``busy``).
    Shards Redis cannot serve are counted in ``failed`` and, after the others
    are done, raise :class:`FlushIncomplete` (its ``result`` says what was
    done); nothing is lost, a later flush picks them up.

    Called inside a transaction (``atomic``), Redis is told the batches are
    applied only once that transaction commits: rolled back, they stay
    buffered and the next flush applies them.
    """
    result, _ = _flush(shards)
    if result.failed:
        raise FlushIncomplete(
            f"Redis is unavailable for {result.failed} shards; they are flushed later", result
        )
    return result


def _flush(shards: Iterable[int] | None) -> tuple[FlushResult, set[int]]:
    """:func:`flush` without the raise; also the busy shards' numbers.

    Shards are claimed ``CLAIM_SHARDS`` at a time, from a random place in
    their order: several flushers then work on different shards at once,
    each claim applied in its own transactions, and a flusher's memory is
    bounded by one claim's transaction (``FLUSH_MAX_ROWS``).
    """
    config = _config()
    result = FlushResult()
    chosen = list(range(int(config["SHARDS"])) if shards is None else sorted(set(shards)))
    if chosen:
        start = random.randrange(len(chosen))  # noqa: S311 - spreading work, not a secret
        chosen = chosen[start:] + chosen[:start]
    size = int(config["CLAIM_SHARDS"])
    busy: set[int] = set()
    for offset in range(0, len(chosen), size):
        busy |= _flush_claim(config, chosen[offset : offset + size], result)
    result.busy = len(busy)
    return result, busy


def _flush_claim(config: dict[str, Any], shards: Sequence[int], result: FlushResult) -> set[int]:
    """Claim ``shards``, apply their batches, release them; the busy ones."""
    token = uuid.uuid4().hex
    lease_ms = int(float(config["LEASE_SECONDS"]) * 1000)
    started = time.monotonic()
    begins: list[Call] = []
    for shard in shards:
        tag = _tag(config, shard)
        keys = [f"{tag}:lease", f"{tag}:live", f"{tag}:batches"]
        begins.append((shard, keys, [token, lease_ms, f"{tag}:batch:"]))
    # 1. Claim: per shard, take the lease and rename live to a new batch.
    claimed: dict[int, list[str]] = {}
    busy: set[int] = set()
    for (shard, _, _), reply in zip(begins, _per_node(config, _BEGIN, begins), strict=True):
        if isinstance(reply, Exception):
            result.failed += 1
        elif reply is None:
            busy.add(shard)
        elif reply:
            claimed[shard] = [raw.decode() for raw in reply]
    if claimed:
        rows_before = result.rows
        try:
            _reached("claimed")
            _apply(config, claimed, token, lease_ms, result)
        finally:
            # 5. Release the leases still ours (a dead flusher's expire).
            seconds = f"{time.monotonic() - started:.3f}"
            rows = result.rows - rows_before
            releases = [
                (
                    shard,
                    [f"{_tag(config, shard)}:lease", f"{_tag(config, shard)}:flushed"],
                    [token, _now_ms(), seconds, rows],
                )
                for shard in claimed
            ]
            _per_node(config, _RELEASE, releases)
    return busy


@dataclass
class ShardStats:
    """The state of one shard of the buffer (``project_stats_flush --stats``).

    ``fields``: hash fields buffered (live and claimed; about one per series
    and bucket); ``batches``: claimed batches waiting to be applied;
    ``oldest``: age in seconds of its oldest buffered delta (None: nothing
    buffered); ``flushed_at``/``flush_seconds``/``flush_rows``: its last
    flush (by the claim it was part of), None if Redis holds none.
    """

    shard: int
    fields: int
    batches: int
    oldest: float | None
    flushed_at: float | None
    flush_seconds: float | None
    flush_rows: int | None


def shard_stats() -> list[ShardStats]:
    """Every shard's :class:`ShardStats` (one round trip per Redis node)."""
    config = _config()
    calls: list[Call] = []
    for shard in range(int(config["SHARDS"])):
        tag = _tag(config, shard)
        calls.append(
            (shard, [f"{tag}:live", f"{tag}:batches", f"{tag}:flushed"], [f"{tag}:batch:"])
        )
    now = time.time()
    stats: list[ShardStats] = []
    for (shard, _, _), reply in zip(calls, _every_reply(config, _STATS, calls), strict=True):
        live_fields, first_ms, claimed, flushed = reply
        times = [int(first_ms)] if first_ms is not None else []
        fields = int(live_fields)
        for position in range(0, len(claimed), 3):
            times.append(int(float(claimed[position + 1])))
            fields += int(claimed[position + 2])
        at, seconds, rows = flushed
        stats.append(
            ShardStats(
                shard=shard,
                fields=fields,
                batches=len(claimed) // 3,
                oldest=max(0.0, now - min(times) / 1000) if times else None,
                flushed_at=int(at) / 1000 if at is not None else None,
                flush_seconds=float(seconds) if seconds is not None else None,
                flush_rows=int(rows) if rows is not None else None,
            )
        )
    return stats


def flush_projects(project_ids: Iterable[int], *, wait: float | None = None) -> FlushResult:
    """Flush the shards of ``project_ids``, waiting up to ``wait`` seconds
    (default: ``LEASE_SECONDS`` and one more, by when a dead flusher's lease
    has expired) for shards another flusher holds; :class:`BufferUnavailable`
    if one is still held then.
    """
    config = _config()
    if wait is None:
        wait = float(config["LEASE_SECONDS"]) + 1
    todo = {_shard(config, pk) for pk in project_ids}
    total = FlushResult()
    deadline = time.monotonic() + wait
    while todo:
        result, busy = _flush(todo)
        for name in ("rows", "batches", "skipped", "shards", "failed"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        if result.failed:
            raise FlushIncomplete(f"Redis is unavailable for {result.failed} shards", total)
        todo = busy
        if todo and time.monotonic() >= deadline:
            total.busy = len(todo)
            raise BufferUnavailable(
                f"{len(todo)} shards stayed held by another flusher for {wait:g} seconds"
            )
        if todo:
            time.sleep(0.05)
    return total


def forget_redis_only(project_ids: Iterable[int]) -> int:
    """Delete what the Redis-only rollups hold of ``project_ids``; how many fields.

    One script per shard of the projects (one round trip per node); its work
    grows with the buckets those rollups keep (their retention).
    """
    config = _config()
    short = redis_only_rollups(config)
    per_shard = _by_shard(config, project_ids)
    if not short or not per_shard:
        return 0
    rollups = ";".join(str(rollup) for rollup in short)
    calls: list[Call] = [
        (shard, [f"{_tag(config, shard)}:live"], [rollups, *_grouped(config, ids)])
        for shard, ids in per_shard.items()
    ]
    gone = 0
    for reply in _every_reply(config, _FORGET_SHORT, calls):
        gone += int(reply)
    return gone


def forget_redis_only_after_delete(project_ids: Sequence[int]) -> None:
    """:func:`forget_redis_only` once the database deleted the projects' rows.

    The deletion is committed by then, so Redis failing is not raised to
    the caller: it is logged with its traceback, and what the Redis-only
    rollups still hold of those projects expires with their retention.
    """
    try:
        forget_redis_only(project_ids)
    except BufferUnavailable:
        logger.exception(
            "Could not forget the Redis-only buckets of %d deleted projects; "
            "they expire with their retention.",
            len(project_ids),
        )


def _apply(
    config: dict[str, Any],
    claimed: dict[int, list[str]],
    token: str,
    lease_ms: int,
    result: FlushResult,
) -> None:
    where = {batch_id: shard for shard, ids in claimed.items() for batch_id in ids}
    keys = {
        batch_id: f"{_tag(config, shard)}:batch:{batch_id}" for batch_id, shard in where.items()
    }
    # Sizes first, so a transaction takes whole batches up to FLUSH_MAX_ROWS.
    order = sorted(where)
    sizes = _per_node(config, _HLEN, [(where[b], [keys[b]], []) for b in order])
    failed_shards = {
        where[b] for b, size in zip(order, sizes, strict=True) if isinstance(size, Exception)
    }
    cap = int(config["FLUSH_MAX_ROWS"])
    groups: list[list[str]] = []
    rows_in_group = 0
    for batch_id, size in zip(order, sizes, strict=True):
        if where[batch_id] in failed_shards:
            continue
        if not groups or rows_in_group + int(size) > cap:
            groups.append([])
            rows_in_group = 0
        groups[-1].append(batch_id)
        rows_in_group += int(size)
    for group in groups:
        # 2. Read the group's batches.
        contents = _per_node(config, _HGETALL, [(where[b], [keys[b]], []) for b in group])
        _reached("read")
        batches: dict[str, list[Row]] = {}
        firsts: list[int] = []
        for batch_id, content in zip(group, contents, strict=True):
            if isinstance(content, Exception):
                failed_shards.add(where[batch_id])
                continue
            rows, first_ms = _rows(dict(zip(content[::2], content[1::2], strict=True)))
            batches[batch_id] = rows
            if first_ms is not None:
                firsts.append(first_ms)
        # A shard that could not be read entirely waits for the next flush.
        batches = {b: rows for b, rows in batches.items() if where[b] not in failed_shards}
        if not batches:
            continue

        def acknowledge(done: Sequence[str] = tuple(batches)) -> None:
            # 4. After the commit: delete the batches and their ids, renew the leases.
            _reached("committed")
            acks = [
                (
                    where[b],
                    [
                        keys[b],
                        f"{_tag(config, where[b])}:batches",
                        f"{_tag(config, where[b])}:lease",
                    ],
                    [b, token, lease_ms],
                )
                for b in done
            ]
            _per_node(config, _ACK, acks)
            _reached("acked")

        # 3. One transaction: the counts and the ids of the batches they came from.
        applied, written = database.apply_batches(
            batches,
            int(time.time()),
            before_commit=lambda: _reached("applying"),
            after_commit=acknowledge,
        )
        result.batches += len(applied)
        result.skipped += len(batches) - len(applied)
        result.rows += written
        if applied and firsts:
            lag = max(0.0, time.time() - min(firsts) / 1000)
            result.lag = lag if result.lag is None else max(result.lag, lag)
    result.failed += len(failed_shards)
    result.shards += len(set(where.values()) - failed_shards)


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
        # Asking for no field: just the ids.
        calls.append((shard, [f"{tag}:live", f"{tag}:batches"], [f"{tag}:batch:"]))
    ids: set[str] = set()
    for reply in _every_reply(config, _FIELDS, calls):
        ids.update(reply[position].decode() for position in range(2, len(reply), 2))
    return ids
