"""The flush: buffered increments moved into the database exactly once.

Flush protocol (each step names the crash point right after it; the
package's ``crash_hook`` is called there so tests can kill the process). A
flush claims ``CLAIM_SHARDS`` shards at a time (several flushers share the
shards that way); each step runs on all the shards of the claim at once, one
round trip per Redis node::

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
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import database
from ..database import Row
from . import client, scripts
from .client import BufferUnavailable, Call, _per_node
from .keys import _by_shard, _config, _grouped, _parse_field, _shard, _tag, redis_only_rollups

logger = logging.getLogger("project_stats.flush")


class FlushIncomplete(BufferUnavailable):
    """Some shards could not be flushed; ``result`` tells what the others did."""

    def __init__(self, message: str, result: FlushResult) -> None:
        super().__init__(message)
        self.result = result


def _reached(point: str) -> None:
    # The package's hook, looked up at each crash point: tests set it there.
    from . import crash_hook

    if crash_hook is not None:
        crash_hook(point)


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
    for (shard, _, _), reply in zip(begins, _per_node(config, scripts.BEGIN, begins), strict=True):
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
                    [token, client._now_ms(), seconds, rows],
                )
                for shard in claimed
            ]
            _per_node(config, scripts.RELEASE, releases)
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
    for (shard, _, _), reply in zip(
        calls, client._every_reply(config, scripts.STATS, calls), strict=True
    ):
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
    for reply in client._every_reply(config, scripts.FORGET_SHORT, calls):
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
    sizes = _per_node(config, scripts.HLEN, [(where[b], [keys[b]], []) for b in order])
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
        contents = _per_node(config, scripts.HGETALL, [(where[b], [keys[b]], []) for b in group])
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
            _per_node(config, scripts.ACK, acks)
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
    for reply in client._every_reply(config, scripts.FIELDS, calls):
        ids.update(reply[position].decode() for position in range(2, len(reply), 2))
    return ids
