"""The time-series service: record and read per-project event counts.

Everything that reads or writes counts (views, admin, commands) goes through
these functions. No request objects and no DRF here.

Times are aware ``datetime``s or seconds since the UNIX epoch; rollups are
bucket widths in seconds and must be configured in ``PROJECT_STATS["ROLLUPS"]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, QuerySet
from django.utils import timezone

from ..conf import project_stats_settings
from ..constants import MAX_ENVIRONMENT_LENGTH, stat_code
from . import buffer, database
from .buffer import BufferUnavailable, FlushResult, ShardStats
from .rollups import (
    MICROS,
    TimeLike,
    optimal_rollup,
    point_count,
    series,
    to_micros,
)

__all__ = [
    "BackfillResult",
    "BufferUnavailable",
    "FlushResult",
    "Increment",
    "QueryError",
    "RangeQuery",
    "ShardStats",
    "buffer_stats",
    "StatsRangeQuery",
    "environment_exists",
    "environment_sql",
    "delete",
    "backfill",
    "buffer_enabled",
    "flush",
    "get_optimal_rollup",
    "get_range",
    "get_range_by_project",
    "get_range_total",
    "get_stats_by_project",
    "get_rollups",
    "incr",
    "incr_many",
    "plan_range",
    "plan_stats_range",
    "prune",
    "prune_applied_batches",
    "reads_in_one_statement",
]

ProjectLike = Model | int


class QueryError(ValueError):
    """A read that cannot be answered as asked (e.g. too many points)."""


class Increment(NamedTuple):
    """One item of :func:`incr_many`; plain tuples in this order work too."""

    project: ProjectLike
    stat: str | int
    timestamp: TimeLike | None = None
    count: int = 1  # type: ignore[assignment]  # shadows tuple.count on purpose
    environment: str | None = None


def get_rollups() -> tuple[tuple[int, int], ...]:
    """The configured ``(seconds per bucket, buckets kept)`` pairs, finest first."""
    return project_stats_settings.ROLLUPS


def _project_id(project: ProjectLike) -> int:
    pk = project if isinstance(project, int) and not isinstance(project, bool) else None
    if pk is None and isinstance(project, Model):
        pk = project.pk
    if not isinstance(pk, int):
        raise ValueError("project must be a saved Project or its primary key")
    return pk


def _environment(environment: str | None) -> str:
    if environment is None:
        return ""
    if not isinstance(environment, str):
        raise ValueError(f"environment must be a string, not {environment!r}")
    if len(environment) > MAX_ENVIRONMENT_LENGTH:
        raise ValueError(f"environment longer than {MAX_ENVIRONMENT_LENGTH} characters")
    if "\x00" in environment:
        # PostgreSQL cannot store NUL in text; refuse it on every database alike.
        raise ValueError("environment must not contain NUL characters")
    return environment


# Counts are 64-bit signed integers in the database.
MAX_COUNT = 2**63 - 1

# Epoch seconds a float timestamp may take for incr_many's shortcut: well
# inside what ``to_micros`` accepts (years 1 to 9999); others take it.
_FAST_SECONDS = (-6e10, 2.5e11)


def _count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be an integer from 0 to 2**63 - 1, not {count!r}")
    return count


def _rollups_to_write(rollups: Iterable[int] | None) -> tuple[int, ...]:
    configured = tuple(r for r, _ in get_rollups())
    if rollups is None:
        return configured
    chosen = tuple(dict.fromkeys(rollups))
    unknown = [r for r in chosen if r not in configured]
    if unknown:
        raise ValueError(f"rollups {unknown} are not configured (configured: {configured})")
    return chosen


def _check_rollup(rollup: int) -> int:
    if rollup not in {r for r, _ in get_rollups()}:
        raise QueryError(f"rollup {rollup!r} is not configured")
    return rollup


def incr(
    project: ProjectLike,
    stat: str | int,
    *,
    count: int = 1,
    timestamp: TimeLike | None = None,
    environment: str | None = None,
    rollups: Iterable[int] | None = None,
) -> None:
    """Add ``count`` to the bucket holding ``timestamp`` (default: now) in every rollup.

    With ``environment``, that environment's series and the all-environments
    total are both incremented. ``rollups`` restricts the write to those
    configured rollups. One statement: atomic, and concurrent calls on the
    same bucket never lose an increment.
    """
    incr_many(
        [Increment(project, stat, timestamp, count, environment)],
        rollups=rollups,
    )


def incr_many(
    items: Iterable[Increment | Sequence[Any]],
    *,
    rollups: Iterable[int] | None = None,
) -> int:
    """Record many increments at once; returns the number of distinct rows written.

    Items are :class:`Increment`s or tuples ``(project, stat, timestamp=None,
    count=1, environment=None)``. They are summed in memory and each distinct
    bucket is written once, in as few statements as the database allows, in
    one transaction: the whole batch is recorded or none of it. Every item is
    validated before anything is written.

    With ``PROJECT_STATS["BUFFER"]`` the rows go to Redis instead (see
    :mod:`project_stats.tsdb.buffer`): atomic per shard of projects, and
    :class:`BufferUnavailable` when Redis cannot take them (``ON_ERROR``).
    """
    targets = _rollups_to_write(rollups)
    now_second: int | None = None
    # The hot loop of ingestion. Each item is validated, with the checks of
    # values seen before skipped, and summed per second; the seconds are
    # bucketed per rollup afterwards, once per distinct series and second.
    codes: dict[str, int] = {}
    environments: dict[str, str] = {}
    per_second: defaultdict[tuple[int, int, str, int], int] = defaultdict(int)
    for item in items:
        size = len(item)
        if size == 5:
            project, stat, timestamp, count, environment = item
        else:
            project, stat, timestamp, count, environment = Increment(*item)
        project_id = project if type(project) is int else _project_id(project)
        if type(stat) is str and stat in codes:
            code = codes[stat]
        else:
            code = stat_code(stat)
            if type(stat) is str:
                codes[stat] = code
        if type(count) is not int or not 0 <= count <= MAX_COUNT:
            count = _count(count)
        if environment is None:
            environment = ""
        elif type(environment) is not str or environment not in environments:
            environment = environments[environment] = _environment(environment)
        if timestamp is None:
            if now_second is None:
                now_second = to_micros(timezone.now()) // MICROS
            second = now_second
        elif type(timestamp) is float and _FAST_SECONDS[0] < timestamp < _FAST_SECONDS[1]:
            second = round(timestamp * MICROS) // MICROS  # as to_micros, without its checks
        else:
            second = to_micros(timestamp) // MICROS
        per_second[(project_id, code, environment, second)] += count
    totals: defaultdict[tuple[int, int, str, int, int], int] = defaultdict(int)
    for (project_id, code, environment, second), count in per_second.items():
        for rollup in targets:
            epoch = second - second % rollup
            totals[(project_id, code, "", rollup, epoch)] += count
            if environment:
                totals[(project_id, code, environment, rollup, epoch)] += count
    rows = [(*key, total) for key, total in totals.items() if total]
    if any(total > MAX_COUNT for *_, total in rows):
        raise ValueError("a bucket's increments in this batch add up to more than 2**63 - 1")
    if buffer.enabled():
        buffer.write(rows)
    else:
        database.upsert(rows)
    return len(rows)


def buffer_enabled() -> bool:
    """Whether writes go through the Redis buffer (``PROJECT_STATS["BUFFER"]`` is set).

    Reads then need :func:`get_range` and friends, which add buffered counts.
    """
    return buffer.enabled()


def flush() -> FlushResult:
    """Move the buffered increments into the database, exactly once; what it did.

    Does nothing (an empty result) without a buffer. ``BufferUnavailable``
    (a ``FlushIncomplete`` carrying the partial result) when Redis could not
    serve some shards; they are flushed by a later call, nothing is lost.
    """
    if not buffer.enabled():
        return FlushResult()
    return buffer.flush()


def buffer_stats() -> list[ShardStats]:
    """Per shard of the write buffer: what is buffered, its age, the last flush.

    An empty list without a buffer; ``BufferUnavailable`` when Redis cannot answer.
    """
    if not buffer.enabled():
        return []
    return buffer.shard_stats()


def environment_exists(organization: ProjectLike, environment: str) -> bool:
    """Whether counts were ever recorded for ``environment`` in the organization.

    ``organization`` is an ``Organization`` or its primary key.
    """
    try:
        env = _environment(environment)
    except ValueError:
        return False  # never storable, so never recorded
    if not env:
        return False
    organization_id = _project_id(organization)
    if buffer.enabled():
        ids = database.organization_project_ids(organization_id)
        if buffer.environment_seen(ids, env):
            return True
    return database.environment_recorded(organization_id, env)


def get_optimal_rollup(start: TimeLike, end: TimeLike, *, now: TimeLike | None = None) -> int:
    """The finest rollup whose span covers ``end - start`` and whose retention covers ``end``.

    See :func:`project_stats.tsdb.rollups.optimal_rollup`; the coarsest rollup
    when none qualifies.
    """
    return optimal_rollup(get_rollups(), start, end, timezone.now() if now is None else now)


def _plan(
    stat: str | int,
    start: TimeLike,
    end: TimeLike,
    rollup: int | None,
    environment: str | None,
    now: TimeLike | None,
) -> tuple[int, str, int, list[int]]:
    """Validate a read: ``(stat code, environment, rollup, bucket starts)``."""
    code = stat_code(stat)
    env = _environment(environment)
    if rollup is None:
        rollup = get_optimal_rollup(start, end, now=now)
    _check_rollup(rollup)
    points = point_count(start, end, rollup)
    limit = project_stats_settings.MAX_POINTS
    if points > limit:
        raise QueryError(f"the series would have {points} points; the limit is {limit}")
    return code, env, rollup, series(start, end, rollup)


def reads_in_one_statement() -> bool:
    """Whether a :class:`RangeQuery` run inside a caller's statement gives the whole answer.

    True while the database holds every count. A store that keeps part of a
    read elsewhere (a write buffer not yet flushed) answers False, and callers
    then read through :func:`get_range` and friends, which add that part.
    """
    return not buffer_enabled()


@dataclass(frozen=True)
class RangeQuery:
    """A validated read of :func:`get_range`'s series, to run inside another statement.

    Made by :func:`plan_range`. :meth:`sql` gives a ``SELECT`` of the stored
    buckets that a caller joins into its own statement (e.g. the API's
    access lookup), so a request reads its counts in the same round trip;
    :meth:`series` and :meth:`series_by_project` turn the rows into the
    zero-filled series the ``get_range`` functions return.
    """

    stat: int
    environment: str
    rollup: int
    buckets: tuple[int, ...]
    # Columns of the rows :meth:`sql` selects.
    columns: ClassVar[int] = 3

    def sql(
        self,
        connection: BaseDatabaseWrapper,
        projects: str,
        params: Sequence[Any] = (),
        *,
        summed: bool = False,
        single: bool = False,
    ) -> tuple[str, list[Any]] | None:
        """``(sql, params)`` selecting ``(project_id, bucket_start, count)`` rows.

        ``projects`` is SQL selecting the project ids (with ``params``);
        ``summed`` adds the projects up per bucket (project ``NULL``);
        ``single`` says ``projects`` selects at most one id. None when the
        series is empty (nothing to read).
        """
        if not self.buckets:
            return None
        return database.series_sql(
            connection,
            projects,
            params,
            stat=self.stat,
            environment=self.environment,
            rollup=self.rollup,
            first=self.buckets[0],
            last=self.buckets[-1],
            summed=summed,
            single=single,
        )

    def series(self, rows: Iterable[Sequence[Any]]) -> list[tuple[int, int]]:
        """The zero-filled series from ``(project, bucket_start, count)`` rows of one project."""
        stored = {int(epoch): int(count) for _, epoch, count in rows}
        return [(epoch, stored.get(epoch, 0)) for epoch in self.buckets]

    def series_by_project(
        self, rows: Iterable[Sequence[Any]], project_ids: Iterable[int]
    ) -> dict[int, list[tuple[int, int]]]:
        """One zero-filled series per project id given, from rows of many projects."""
        stored = {(int(pk), int(epoch)): int(count) for pk, epoch, count in rows}
        return {
            pk: [(epoch, stored.get((pk, epoch), 0)) for epoch in self.buckets]
            for pk in project_ids
        }


def plan_range(
    stat: str | int,
    start: TimeLike,
    end: TimeLike,
    *,
    rollup: int | None = None,
    environment: str | None = None,
    now: TimeLike | None = None,
) -> RangeQuery:
    """The :class:`RangeQuery` :func:`get_range` would run; same validation, no database."""
    code, env, rollup, buckets = _plan(stat, start, end, rollup, environment, now)
    return RangeQuery(code, env, rollup, tuple(buckets))


@dataclass(frozen=True)
class StatsRangeQuery:
    """A validated read of several stats' all-environments buckets, per project.

    Made by :func:`plan_stats_range`; :func:`get_stats_by_project` runs the
    same read on its own. :meth:`sql` selects ``(project_id, bucket_start,
    count, stat)`` rows for a caller's statement, :meth:`cells` keys them.
    """

    stats: tuple[int, ...]
    rollup: int
    first: int
    last: int
    columns: ClassVar[int] = 4

    def sql(
        self,
        connection: BaseDatabaseWrapper,
        projects: str,
        params: Sequence[Any] = (),
        *,
        summed: bool = False,
        single: bool = False,
    ) -> tuple[str, list[Any]] | None:
        """``(sql, params)`` for the projects whose ids ``projects`` selects; never summed.

        ``single`` is accepted as :meth:`RangeQuery.sql` takes it; usage reads
        are of organizations, never of one project's path.
        """
        if summed:
            raise ValueError("a StatsRangeQuery reads per project")
        return database.stats_sql(
            connection,
            projects,
            params,
            stats=self.stats,
            environment="",
            rollup=self.rollup,
            first=self.first,
            last=self.last,
        )

    @staticmethod
    def cells(rows: Iterable[Sequence[Any]]) -> dict[tuple[int, int, int], int]:
        """``{(project_id, stat, bucket_start): count}`` from the rows of :meth:`sql`."""
        return {(int(pk), int(stat), int(epoch)): int(n) for pk, epoch, n, stat in rows}


def plan_stats_range(
    stats: Iterable[str | int], first: int, last: int, *, rollup: int
) -> StatsRangeQuery:
    """The read of ``stats`` in the ``rollup`` buckets starting ``first..last`` (inclusive).

    ``first`` and ``last`` are whole epoch seconds on the rollup's grid.
    ``QueryError`` for an unconfigured rollup, unaligned or reversed bounds;
    ``ValueError`` for an unknown stat. The number of buckets is the caller's
    to bound. No database.
    """
    codes = tuple(dict.fromkeys(stat_code(stat) for stat in stats))
    _check_rollup(rollup)
    if first % rollup or last % rollup or first > last:
        raise QueryError(f"buckets {first}..{last} are not a range of {rollup} s buckets")
    return StatsRangeQuery(codes, rollup, first, last)


def get_stats_by_project(
    projects: Iterable[ProjectLike], query: StatsRangeQuery
) -> dict[tuple[int, int, int], int]:
    """``{(project_id, stat, bucket_start): count}`` of a planned read, buffered counts included.

    Buckets without counts are absent. One SQL statement (and, with the
    buffer, Redis read scripts in bounded slices), however many stats. With
    the buffer, ``QueryError`` before anything is read when the projects
    times the buckets exceed ``MAX_TOTAL_POINTS``: Redis sums nothing, so
    every series is read.
    """
    ids = [_project_id(p) for p in projects]
    if not ids or not query.stats:
        return {}
    if buffer.enabled():
        buckets = range(query.first, query.last + 1, query.rollup)
        _check_total_points(len(set(ids)), len(buckets))
        return buffer.read_stats(ids, query.stats, "", query.rollup, buckets)
    cells, _ = database.read_cells(ids, query.stats, "", query.rollup, query.first, query.last, ())
    return cells


def environment_sql(
    connection: BaseDatabaseWrapper, organization: str, environment: str
) -> tuple[str, list[Any]] | None:
    """SQL for :func:`environment_exists` inside another statement; None if never storable.

    ``organization`` is SQL for the organization's id.
    """
    try:
        env = _environment(environment)
    except ValueError:
        return None
    if not env:
        return None
    return database.environment_sql(connection, organization, env)


def get_range(
    project: ProjectLike,
    stat: str | int,
    start: TimeLike,
    end: TimeLike,
    *,
    rollup: int | None = None,
    environment: str | None = None,
    now: TimeLike | None = None,
) -> list[tuple[int, int]]:
    """``(bucket_start_epoch, count)`` pairs for ``[start, end]``, ascending and zero-filled.

    The series is Sentry's: the bucket holding ``end`` is the last point, and
    points step back one rollup at a time while still ``>= start``, so there
    are ``floor((end - start) / rollup) + 1`` of them. ``rollup`` defaults to
    :func:`get_optimal_rollup`. ``QueryError`` when the rollup is not
    configured or the series would exceed ``MAX_POINTS``. One query.
    """
    code, env, rollup, buckets = _plan(stat, start, end, rollup, environment, now)
    if not buckets:
        return []
    project_id = _project_id(project)
    if buffer.enabled():
        cells = buffer.read([project_id], code, env, rollup, buckets)
        return [(epoch, cells.get((project_id, epoch), 0)) for epoch in buckets]
    stored = database.read_buckets(project_id, code, env, rollup, buckets[0], buckets[-1])
    return [(epoch, stored.get(epoch, 0)) for epoch in buckets]


def get_range_total(
    projects: QuerySet[Any] | Iterable[ProjectLike],
    stat: str | int,
    start: TimeLike,
    end: TimeLike,
    *,
    rollup: int | None = None,
    environment: str | None = None,
    now: TimeLike | None = None,
) -> list[tuple[int, int]]:
    """The series of :func:`get_range` summed over ``projects``, in one query.

    ``projects`` is a ``Project`` queryset (used as a subquery) or an
    iterable of projects or primary keys.
    """
    code, env, rollup, buckets = _plan(stat, start, end, rollup, environment, now)
    if not buckets:
        return []
    if buffer.enabled():
        ids = projects if not isinstance(projects, QuerySet) else database.project_ids(projects)
        project_ids = [_project_id(p) for p in ids]
        # Redis sums nothing: bounded as a read of every series.
        _check_total_points(len(project_ids), len(buckets))
        summed: defaultdict[int, int] = defaultdict(int)
        for (_, epoch), count in buffer.read(project_ids, code, env, rollup, buckets).items():
            summed[epoch] += count
        return [(epoch, summed[epoch]) for epoch in buckets]
    stored = database.read_buckets_summed(
        _project_ids(projects), code, env, rollup, buckets[0], buckets[-1]
    )
    return [(epoch, stored.get(epoch, 0)) for epoch in buckets]


def get_range_by_project(
    projects: Iterable[ProjectLike],
    stat: str | int,
    start: TimeLike,
    end: TimeLike,
    *,
    rollup: int | None = None,
    environment: str | None = None,
    now: TimeLike | None = None,
) -> dict[int, list[tuple[int, int]]]:
    """:func:`get_range` for each project, keyed by primary key, in one query.

    Every project given gets a zero-filled series, with or without data.
    ``QueryError``, before anything is read, when the series would hold
    more than ``MAX_TOTAL_POINTS`` points together.
    """
    ids = [_project_id(p) for p in projects]
    code, env, rollup, buckets = _plan(stat, start, end, rollup, environment, now)
    _check_total_points(len(ids), len(buckets))
    if not buckets or not ids:
        return {pk: [] for pk in ids}
    if buffer.enabled():
        cells = buffer.read(ids, code, env, rollup, buckets)
        return {pk: [(epoch, cells.get((pk, epoch), 0)) for epoch in buckets] for pk in ids}
    stored = database.read_buckets_by_project(ids, code, env, rollup, buckets[0], buckets[-1])
    return {pk: [(epoch, stored.get((pk, epoch), 0)) for epoch in buckets] for pk in ids}


def _check_total_points(series_count: int, points: int) -> None:
    total, limit = series_count * points, project_stats_settings.MAX_TOTAL_POINTS
    if total > limit:
        raise QueryError(
            f"{series_count} series of {points} points would have {total} points; "
            f"the limit is {limit}"
        )


def _project_ids(projects: QuerySet[Any] | Iterable[ProjectLike]) -> QuerySet[Any] | list[int]:
    if isinstance(projects, QuerySet):
        return projects.values("pk")
    return [_project_id(p) for p in projects]


def delete(projects: Iterable[ProjectLike]) -> int:
    """Delete every stored count, in every rollup and environment, of ``projects``.

    For replacing a project's whole history (the demo data does); returns the
    number of rows deleted. One statement. With a buffer, what is buffered
    for them is flushed first, so it cannot bring the deleted counts back:
    shards another flusher holds are waited for, up to ``LEASE_SECONDS`` and
    a second (a dead flusher's lease has expired by then), and
    :class:`BufferUnavailable` is raised, nothing deleted, if one is still held.
    The rollups kept in Redis only lose these projects' buckets there too
    (the return value counts database rows only), once the deletion commits:
    inside a transaction that rolls back they keep them, as the database
    keeps its rows.
    """
    ids = [_project_id(project) for project in projects]
    if buffer.enabled() and ids:
        buffer.flush_projects(ids)
        database.on_commit(lambda: buffer.forget_redis_only_after_delete(ids))
    return database.delete_projects(ids)


# Backfill and prune live in their own module; they use the validation above.
from .maintenance import (  # noqa: E402
    BackfillResult,
    backfill,
    prune,
    prune_applied_batches,
)
