"""Backfill and prune planning: which buckets a maintenance run touches, in what chunks.

The statements themselves are in :mod:`project_stats.tsdb.database`; this
module validates the arguments and walks the chunks. Re-exported by
:mod:`project_stats.tsdb`, which callers import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.utils import timezone

from ..conf import BUFFER_DEFAULTS, project_stats_settings
from ..constants import stat_code
from . import ProjectLike, _project_id, buffer, database, get_rollups
from .rollups import (
    MICROS,
    TimeLike,
    align_up,
    chunk_span,
    closed_buckets,
    retention_start,
    to_datetime,
    to_micros,
)

__all__ = [
    "BACKFILL_CHUNK_SOURCE_BUCKETS",
    "BackfillResult",
    "backfill",
    "prune",
    "prune_applied_batches",
]


# About this many source buckets per series go into one backfill chunk: enough
# for the database to work in bulk, few enough that a chunk's transaction stays
# short and its locks few (10s -> 1h: one hour per chunk; 1h -> 1d: 15 days).
BACKFILL_CHUNK_SOURCE_BUCKETS = 360


@dataclass
class BackfillResult:
    """What :func:`backfill` did (or, with ``dry_run``, would do) to one target rollup.

    ``start``/``end`` are the first and the exclusive last target bucket
    starts processed (epoch seconds). ``skipped`` counts target buckets of the
    requested range that ``replace`` left alone because they are not wholly
    inside the source's retention. ``examined`` counts (series, bucket) pairs
    compared; ``written`` the rows inserted or changed.
    """

    rollup: int
    source: int
    start: int
    end: int
    skipped: int = 0
    chunks: int = 0
    examined: int = 0
    written: int = 0
    replace: bool = False
    dry_run: bool = False

    @property
    def buckets(self) -> int:
        """Target buckets (per series) in ``[start, end)``."""
        return (self.end - self.start) // self.rollup


def _backfill_pairs(
    rollups: Iterable[int] | None, source: int | None
) -> list[tuple[int, int, int]]:
    """``(target, source, source samples)`` per target, finest target first.

    Rollups kept in Redis only (``BUFFER["REDIS_ONLY_ROLLUPS"]``) have no
    stored buckets: they are neither a source nor a target. By default a
    target with no stored finer rollup is left out; named, it is an error.
    """
    configured = dict(get_rollups())
    order = sorted(configured)
    redis_only = buffer.redis_only_rollups()
    stored = [r for r in order if r not in redis_only]
    if rollups is None:
        targets = [r for r in stored if any(f < r for f in stored)]
    else:
        targets = sorted(set(rollups))
        unknown = [r for r in targets if r not in configured]
        if unknown:
            raise ValueError(f"rollups {unknown} are not configured (configured: {order})")
    if source is not None and source not in configured:
        raise ValueError(f"source rollup {source} is not configured (configured: {order})")
    in_redis = [r for r in [*targets, *([source] if source is not None else [])] if r in redis_only]
    if in_redis:
        raise ValueError(
            f"rollup {in_redis[0]} is kept in Redis only (BUFFER['REDIS_ONLY_ROLLUPS']): "
            "the database has no buckets of it to build from or to write"
        )
    pairs = []
    for target in targets:
        finer = [r for r in stored if r < target]
        src = source if source is not None else (finer[-1] if finer else None)
        if src is None:
            if any(r < target for r in redis_only):
                raise ValueError(
                    f"rollup {target} has no finer rollup in the database: the finer ones are "
                    "kept in Redis only (BUFFER['REDIS_ONLY_ROLLUPS'])"
                )
            raise ValueError(f"rollup {target} is the finest; there is nothing to build it from")
        if src >= target or target % src:
            raise ValueError(
                f"source rollup {src} does not divide rollup {target} into finer buckets"
            )
        pairs.append((target, src, configured[src]))
    return pairs


def backfill(
    rollups: Iterable[int] | None = None,
    *,
    source: int | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    projects: Iterable[ProjectLike] | None = None,
    stats: Iterable[str | int] | None = None,
    replace: bool = False,
    dry_run: bool = False,
    now: TimeLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[BackfillResult]:
    """Rebuild coarser rollups from finer stored counts; one result per target rollup.

    ``rollups`` are the target bucket widths in seconds (default: every
    configured rollup but the finest), processed finest first, so a coarser
    target is built from an already rebuilt finer one. ``source`` (seconds)
    defaults to the next finer configured rollup and must divide each target.

    Only closed target buckets (``start + rollup <= now``) are touched: those
    overlapping ``[since, until)``, which defaults to the source's retention
    window ``[now - source * samples, now)``. Each is rebuilt from all the
    source buckets inside it, across every environment and the ``""`` total.

    A touched bucket becomes ``max(stored, source sum)``: never lowered, so
    re-running is harmless and real-time counts whose source was pruned stay.
    With ``replace`` it becomes exactly the source sum (rows without source
    data become zero), but only for buckets wholly inside the source's
    retention. ``projects``/``stats`` restrict the series. ``dry_run`` writes
    nothing and reports what would change.

    Work goes in chunks of time, each one statement in its own transaction
    (unless called inside one); ``progress(done, total)`` is called after each.
    Safe to run alongside :func:`incr`. ``ValueError`` on bad input, before
    anything is written.
    """
    now_value = to_datetime(timezone.now() if now is None else now)
    pairs = _backfill_pairs(rollups, source)
    if since is not None and until is not None and to_micros(since) > to_micros(until):
        raise ValueError("since is after until")
    project_ids = None if projects is None else sorted({_project_id(p) for p in projects})
    stat_codes = None if stats is None else sorted({stat_code(s) for s in stats})

    plan: list[tuple[BackfillResult, range]] = []
    for target, src, samples in pairs:
        kept_from = retention_start(src, samples, now_value)
        buckets = closed_buckets(
            kept_from if since is None else since,
            now_value if until is None else until,
            target,
            now_value,
        )
        start, end = buckets.start, buckets.stop
        if replace:
            # Older buckets may have lost source data to pruning: their sum
            # would undercount, so replace never touches them.
            start = min(end, max(start, align_up(kept_from, target)))
        chunks = range(start, end, chunk_span(target, src, BACKFILL_CHUNK_SOURCE_BUCKETS))
        result = BackfillResult(
            rollup=target,
            source=src,
            start=start,
            end=end,
            skipped=(start - buckets.start) // target,
            chunks=len(chunks),
            replace=replace,
            dry_run=dry_run,
        )
        plan.append((result, chunks))

    total = sum(len(chunks) for _, chunks in plan)
    done = 0
    for result, chunks in plan:
        for lo in chunks:
            examined, written = database.backfill_chunk(
                source=result.source,
                target=result.rollup,
                start=lo,
                end=min(lo + chunks.step, result.end),
                project_ids=project_ids,
                stat_codes=stat_codes,
                replace=replace,
                dry_run=dry_run,
            )
            result.examined += examined
            result.written += written
            done += 1
            if progress is not None:
                progress(done, total)
    return [result for result, _ in plan]


def prune(
    *, now: TimeLike | None = None, dry_run: bool = False, batch_size: int = 10_000
) -> dict[int, int]:
    """Delete expired rows; returns rows deleted (or, with ``dry_run``, expired) per rollup.

    For each configured rollup ``(r, n)`` a row is expired when its bucket
    starts before ``now - r * n`` (Sentry's TTL). Rows go in batches of at most
    ``batch_size``, each in its own transaction (unless called inside one).
    Rows of rollups no longer configured are left alone, and so are those of
    rollups kept in Redis only (their buckets expire there; 0 is reported).
    Reads of pruned buckets answer zeros.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    now_value = to_datetime(timezone.now() if now is None else now)
    removed: dict[int, int] = {}
    redis_only = buffer.redis_only_rollups()
    for rollup, samples in get_rollups():
        if rollup in redis_only:
            removed[rollup] = 0  # Redis expires them: no database work
            continue
        before = retention_start(rollup, samples, now_value)
        if dry_run:
            removed[rollup] = database.count_expired(rollup, before)
            continue
        total = 0
        while True:
            deleted = database.delete_expired(rollup, before, batch_size)
            total += deleted
            if deleted < batch_size:
                break
        removed[rollup] = total
    return removed


def prune_applied_batches(*, now: TimeLike | None = None, dry_run: bool = False) -> int:
    """Forget applied batch ids older than ``BUFFER["KEEP_APPLIED_SECONDS"]``; how many.

    An id is what makes retrying its batch harmless, so the ids of batches
    still claimed in Redis are kept whatever their age (``BufferUnavailable``
    when Redis cannot say which). Without a buffer, ids older than the
    default are forgotten.
    """
    config = project_stats_settings.BUFFER
    keep = int((config or BUFFER_DEFAULTS)["KEEP_APPLIED_SECONDS"])
    pending = buffer.pending_batch_ids() if config is not None else set()
    before = to_micros(timezone.now() if now is None else now) // MICROS - keep
    return database.prune_applied_batches(before, pending, dry_run=dry_run)
