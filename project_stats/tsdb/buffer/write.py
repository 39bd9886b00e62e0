"""The write: increments added to a shard's live hash, one script per shard.

A write closes the live hash (as the flush's first step would) before adding
to it when the hash is full (``FLUSH_MAX_ROWS`` fields) or was created by
another incarnation of the server: Redis restored from a snapshot or failed
over brings back a live hash whose batch id a flush may have applied
already. Writes are never resent by the client (a lost reply would count
twice), and a write that would overflow a bucket takes back what it added
(``scripts/write.lua``).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import database, redis_config
from ..database import Row
from . import scripts
from .client import BufferUnavailable, Call, _Failed, _per_node
from .keys import _config, _group, _tag, redis_only_rollups

logger = logging.getLogger("project_stats.flush")


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
    and nothing of the call stays buffered (the parts other shards recorded
    are taken back, even on a full Redis; should a take-back go unanswered,
    the error says which parts may stay). When a shard cannot take its part
    (unreachable, or refusing it: full, loading), ``ON_ERROR`` decides:
    ``"raise"`` raises :class:`BufferUnavailable` saying how many parts the
    other shards recorded (they stay: taking them back would make counts
    that readers saw go down again); ``"database"`` writes that shard's rows
    straight to the database, but only when Redis certainly did not run
    them: after a lost reply or a timeout the write may have been recorded,
    and :class:`BufferUnavailable` says so instead of writing it twice.
    """
    if not rows:
        return
    config = _config()
    short = redis_only_rollups(config)
    parts = _parts(config, rows, short)
    fresh = uuid.uuid4().hex
    calls = [_write_call(config, part, f"{fresh}{i}", short) for i, part in enumerate(parts)]
    # A server that may evict counts or refuse INFO is refused (see redis_config).
    replies = redis_config.refusals(config, len(calls)) or _per_node(config, scripts.WRITE, calls)
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
        raise BufferUnavailable(
            f"{_describe(not_run[0][1])}; nothing of {len(not_run)} parts was recorded, {recorded}"
        )


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
    for (part, _), reply in zip(done, _per_node(config, scripts.UNDO, undos), strict=True):
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
    for reply in _per_node(config, scripts.WRITE_BACK, calls):
        if isinstance(reply, Exception):
            logger.error("Could not take back part of a refused write: %s", reply)
            left += 1
    return left
