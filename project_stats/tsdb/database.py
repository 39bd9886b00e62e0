"""The relational backend: additive upserts and range reads on ``EventCount``.

Every write is a single ``INSERT ... ON CONFLICT DO UPDATE SET count = count +
excluded.count`` statement (``ON DUPLICATE KEY UPDATE`` on MariaDB), so
concurrent writers on one bucket serialize in the database and no increment
is lost (no read-modify-write in Python). What the vendors spell differently
is in ``dialects.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from django.db import DataError, OperationalError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Field, Model, Q, QuerySet, Sum

from .. import prepared
from ..models import AppliedBatch, EventCount, Project
from ..sqllists import AnyOf, any_of
from .dialects import SUPPORTED_VENDORS, Row, dialect, overflow_as_data_error
from .rollups import epoch_to_datetime

__all__ = ["SUPPORTED_VENDORS", "Row"]

logger = logging.getLogger("project_stats.flush")


def _column(name: str) -> str:
    return cast("Field[Any, Any]", EventCount._meta.get_field(name)).column


_NAMES: dict[str, dict[str, str]] = {}


def _names(connection: BaseDatabaseWrapper) -> dict[str, str]:
    """Quoted table and column names: the only text interpolated into our SQL.

    They depend only on the model and the vendor's quoting: built once each.
    """
    names = _NAMES.get(connection.vendor)
    if names is None:
        names = _NAMES[connection.vendor] = _build_names(connection)
    return names


def _build_names(connection: BaseDatabaseWrapper) -> dict[str, str]:
    qn = connection.ops.quote_name
    return {
        "table": qn(EventCount._meta.db_table),
        "columns": ", ".join(
            qn(_column(name))
            for name in ("project", "stat", "environment", "rollup", "timestamp", "count")
        ),
        "conflict": ", ".join(
            qn(_column(name)) for name in ("project", "stat", "rollup", "environment", "timestamp")
        ),
        "count": qn(_column("count")),
        **{
            name: qn(_column(name))
            for name in ("project", "stat", "rollup", "environment", "timestamp")
        },
    }


def _supported(connection: BaseDatabaseWrapper) -> BaseDatabaseWrapper:
    dialect(connection)  # NotImplementedError for a vendor we do not speak
    return connection


def _write_connection() -> BaseDatabaseWrapper:
    """The connection counts are written through (the router's write database)."""
    return _supported(connections[router.db_for_write(EventCount)])


def _read_connection() -> BaseDatabaseWrapper:
    """The connection hand-written reads go through (the router's read database).

    With a router sending reads to a replica, the statements that only read
    (range reads, a dry-run backfill) go there too; anything that writes, and
    the reads a write depends on, stay on the write connection.
    """
    return _supported(connections[router.db_for_read(EventCount)])


def upsert(rows: Sequence[Row]) -> None:
    """Add each row's count to its bucket, creating missing buckets.

    Rows must be distinct by key (aggregate first). They are written in key
    order so that concurrent batches lock rows in the same order. A bucket
    whose count would pass 2**63 - 1 raises ``django.db.DataError`` ("bigint
    out of range") on either database, and nothing of the call is written.
    """
    if not rows:
        return
    rows = sorted(rows)
    connection = _write_connection()
    names = _names(connection)
    speaker = dialect(connection)
    # InnoDB's next-key locks can deadlock writers of neighbouring keys even
    # in one key order; the victim's transaction is rolled back whole, so on
    # its own it is simply run again, once. Inside a caller's transaction the
    # rollback took the caller's earlier work too: that is theirs to retry.
    retry = not connection.in_atomic_block
    while True:
        try:
            with (
                overflow_as_data_error(connection),
                transaction.atomic(using=connection.alias),
                connection.cursor() as cursor,
            ):
                speaker.upsert(cursor, names, rows)
            return
        except OperationalError as exc:
            if not (retry and speaker.is_deadlock(exc)):
                raise
            logger.warning("Deadlock writing %d counts; retrying once.", len(rows))
            retry = False


def _buckets(
    stat: int, environment: str, rollup: int, first: int, last: int
) -> QuerySet[EventCount]:
    return EventCount.objects.filter(
        stat=stat,
        rollup=rollup,
        environment=environment,
        timestamp__gte=epoch_to_datetime(first),
        timestamp__lte=epoch_to_datetime(last),
    )


def read_buckets(
    project_id: int, stat: int, environment: str, rollup: int, first: int, last: int
) -> dict[int, int]:
    """Stored counts of one series for bucket starts ``first..last`` (inclusive).

    The read path of every stats request: hand-written SQL on the unique
    index, bucket starts converted to epoch seconds by the database, so no
    query compilation and no datetime objects per row.
    """
    connection = _read_connection()
    names = _names(connection)
    adapt = connection.ops.adapt_datetimefield_value
    epoch = dialect(connection).epoch(names["timestamp"])
    sql = (
        f"SELECT {epoch}, {names['count']} FROM {names['table']} "  # noqa: S608
        f"WHERE {names['project']} = %s AND {names['stat']} = %s AND {names['rollup']} = %s "
        f"AND {names['environment']} = %s "
        f"AND {names['timestamp']} >= %s AND {names['timestamp']} <= %s"
    )
    params: list[Any] = [
        project_id,
        stat,
        rollup,
        environment,
        adapt(epoch_to_datetime(first)),
        adapt(epoch_to_datetime(last)),
    ]
    rows = prepared.fetch_all(connection, sql, params)
    return {int(epoch_value): count for epoch_value, count in rows}


def _field(name: str) -> Field[Any, Any]:
    return cast("Field[Any, Any]", EventCount._meta.get_field(name))


def _cells_where(
    connection: BaseDatabaseWrapper,
    projects: str | Sequence[int],
    projects_params: Sequence[Any],
    *,
    stats: Sequence[int],
    environment: str,
    rollup: int,
    first: int,
    last: int,
    single: bool,
) -> tuple[Callable[[str], str], str, list[Any]]:
    """The column namer, ``WHERE`` condition and parameters of a read of stored
    buckets (table alias ``c``); values bound through the model's fields.

    ``projects`` is SQL selecting the project ids (with ``projects_params``)
    or the ids themselves, bound as one parameter (see ``sqllists``), as are
    several ``stats``.
    """
    qn = connection.ops.quote_name

    def col(name: str) -> str:
        return f"c.{qn(_column(name))}"

    def prep(name: str, value: Any) -> Any:
        return _field(name).get_db_prep_value(value, connection)

    if not isinstance(projects, str):
        in_projects, projects_params = any_of(
            connection, col("project"), _field("project"), projects
        )
    elif single:
        # The projects as the scalar subquery of a single project: the planner
        # then probes the unique index with that id whatever the table's
        # statistics (a generic plan may otherwise join ``IN (subquery)`` by
        # scanning the (rollup, timestamp) index across every project).
        in_projects = f"{col('project')} = ({projects})"
    else:
        in_projects = f"{col('project')} IN ({projects})"
    if len(stats) == 1:
        in_stats, stats_params = f"{col('stat')} = %s", [prep("stat", stats[0])]
    else:
        in_stats, stats_params = any_of(connection, col("stat"), _field("stat"), stats)
    where = (
        f"{in_projects} AND {in_stats} AND {col('rollup')} = %s "
        f"AND {col('environment')} = %s "
        f"AND {col('timestamp')} >= %s AND {col('timestamp')} <= %s"
    )
    params = [
        *projects_params,
        *stats_params,
        prep("rollup", rollup),
        prep("environment", environment),
        prep("timestamp", epoch_to_datetime(first)),
        prep("timestamp", epoch_to_datetime(last)),
    ]
    return col, where, params


def series_sql(
    connection: BaseDatabaseWrapper,
    projects: str,
    projects_params: Sequence[Any],
    *,
    stat: int,
    environment: str,
    rollup: int,
    first: int,
    last: int,
    summed: bool = False,
    single: bool = False,
) -> tuple[str, list[Any]]:
    """A ``SELECT`` of stored buckets, for a caller to run inside its own statement.

    Rows are ``(project_id, bucket_start_epoch, count)`` for the projects whose
    ids the SQL ``projects`` selects (``projects_params`` are its parameters),
    bucket starts ``first..last`` inclusive; with ``summed``, one row per bucket
    with the counts of all those projects added up and ``NULL`` as project.
    Values are bound through the model's fields.
    """
    col, where, params = _cells_where(
        connection,
        projects,
        projects_params,
        stats=(stat,),
        environment=environment,
        rollup=rollup,
        first=first,
        last=last,
        single=single,
    )
    table = connection.ops.quote_name(EventCount._meta.db_table)
    epoch = dialect(connection).epoch(col("timestamp"))
    if summed:
        bigint = dialect(connection).bigint
        total = dialect(connection).sum_bigint(col("count"))
        sql = (
            f"SELECT {bigint('NULL')} AS project_id, {epoch} AS bucket, {total} AS n "  # noqa: S608
            f"FROM {table} c{_bucket_hint(connection)} WHERE {where} GROUP BY {epoch}"
        )
    else:
        sql = (
            f"SELECT {col('project')} AS project_id, {epoch} AS bucket, "  # noqa: S608
            f"{col('count')} AS n FROM {table} c{_bucket_hint(connection)} WHERE {where}"
        )
    return sql, params


def stats_sql(
    connection: BaseDatabaseWrapper,
    projects: str | Sequence[int],
    projects_params: Sequence[Any],
    *,
    stats: Sequence[int],
    environment: str,
    rollup: int,
    first: int,
    last: int,
) -> tuple[str, list[Any]]:
    """:func:`series_sql` for several stats at once, unsummed.

    Rows are ``(project_id, bucket_start_epoch, count, stat)``. ``projects``
    may also be the project ids themselves (``projects_params`` then unused).
    """
    col, where, params = _cells_where(
        connection,
        projects,
        projects_params,
        stats=stats,
        environment=environment,
        rollup=rollup,
        first=first,
        last=last,
        single=False,
    )
    table = connection.ops.quote_name(EventCount._meta.db_table)
    epoch = dialect(connection).epoch(col("timestamp"))
    sql = (
        f"SELECT {col('project')} AS project_id, {epoch} AS bucket, {col('count')} AS n, "  # noqa: S608
        f"{col('stat')} AS stat FROM {table} c{_bucket_hint(connection)} WHERE {where}"
    )
    return sql, params


ENVIRONMENT_INDEX = "project_stats_ec_project_env"
BUCKET_INDEX = "project_stats_eventcount_bucket_uniq"


def _bucket_hint(connection: BaseDatabaseWrapper) -> str:
    # On MariaDB the (project, environment) index, which holds every row there,
    # can look as good as the bucket key to stale statistics (after a bulk
    # load: 10,000 rows read instead of 24, 8 ms instead of 0.8).
    return dialect(connection).force_index(BUCKET_INDEX)


def environment_sql(
    connection: BaseDatabaseWrapper, organization: str, environment: str
) -> tuple[str, list[Any]]:
    """A boolean SQL expression: counts were recorded for ``environment`` in ``organization``.

    Served by the partial (project, environment) index, as :func:`environment_recorded`.
    ``organization`` is SQL for the organization's id (e.g. a column of the
    caller's statement).
    """
    qn = connection.ops.quote_name
    project_model = cast("type[Model]", EventCount._meta.get_field("project").related_model)
    project_meta = project_model._meta
    organization_field = cast("Field[Any, Any]", project_meta.get_field("organization"))
    project_pk = project_meta.pk
    if project_pk is None:  # pragma: no cover - every concrete model has one
        raise TypeError("Project has no primary key")
    hint = dialect(connection).force_index(ENVIRONMENT_INDEX)
    sql = (
        f"EXISTS (SELECT 1 FROM {qn(EventCount._meta.db_table)} e{hint} "  # noqa: S608
        f"WHERE e.{qn(_column('environment'))} = %s "
        # The partial (project, environment) index's own condition: SQLite uses
        # that index only when the query states it (see environment_recorded).
        f"AND NOT (e.{qn(_column('environment'))} = '') AND e.{qn(_column('project'))} IN "
        f"(SELECT ep.{qn(project_pk.column)} FROM {qn(project_meta.db_table)} ep "
        f"WHERE ep.{qn(str(organization_field.column))} = {organization}))"
    )
    field = cast("Field[Any, Any]", EventCount._meta.get_field("environment"))
    value = field.get_db_prep_value(environment, connection)
    return sql, [value]


def read_buckets_summed(
    project_ids: QuerySet[Any] | Sequence[int],
    stat: int,
    environment: str,
    rollup: int,
    first: int,
    last: int,
) -> dict[int, int]:
    """Counts of many projects' series summed per bucket, in the database."""
    projects = (
        Q(project_id__in=project_ids)
        if isinstance(project_ids, QuerySet)
        else AnyOf(F("project_id"), project_ids)
    )
    rows = (
        _buckets(stat, environment, rollup, first, last)
        .filter(projects)
        .values("timestamp")
        .annotate(total=Sum("count"))
        .values_list("timestamp", "total")
        .order_by()
    )
    return {int(timestamp.timestamp()): int(total) for timestamp, total in rows}


def read_buckets_by_project(
    project_ids: Sequence[int], stat: int, environment: str, rollup: int, first: int, last: int
) -> dict[tuple[int, int], int]:
    """Counts of many projects' series, keyed by ``(project_id, bucket_start)``."""
    rows = (
        _buckets(stat, environment, rollup, first, last)
        .filter(AnyOf(F("project_id"), project_ids))
        .values_list("project_id", "timestamp", "count")
    )
    return {(pk, int(timestamp.timestamp())): count for pk, timestamp, count in rows}


def environment_recorded(organization_id: int, environment: str) -> bool:
    """Whether any project of the organization has counts for ``environment``.

    Served by the partial (project, environment) index: one index probe per
    project of the organization, however many rows they hold (see
    :func:`environment_sql`).
    """
    connection = _read_connection()
    exists, params = environment_sql(connection, "%s", environment)
    organization = Project._meta.get_field("organization").get_db_prep_value(
        organization_id, connection
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {exists}", [*params, organization])  # noqa: S608
        (found,) = cursor.fetchone()
    return bool(found)


def on_commit(callback: Callable[[], None]) -> None:
    """Call ``callback`` once the transaction counts are written in commits
    (at once outside a transaction)."""
    transaction.on_commit(callback, using=_write_connection().alias)


def delete_projects(project_ids: Sequence[int]) -> int:
    """Delete all rows of these projects; returns how many were deleted."""
    if not project_ids:
        return 0
    deleted, _ = EventCount.objects.filter(AnyOf(F("project_id"), project_ids)).delete()
    return deleted


# Backfill: rebuild a coarser rollup from a finer one, set-based.
#
# Each chunk is one statement that compares, per (project, stat, environment,
# target bucket), the sum S of the source buckets inside it with the target's
# stored count T, and writes the difference as an increment:
#
#     INSERT (key, S - T) ... ON CONFLICT DO UPDATE SET count = count + excluded.count
#
# With no concurrent writes this leaves max(T, S) (or exactly S with replace).
# Why a delta and not ``SET count = GREATEST(count, S)``: the statement's
# snapshot is taken when it starts, but ON CONFLICT updates the newest row
# version. An ``incr`` committed in between is missing from S yet present in
# the row (T + c): GREATEST(T + c, S) drops c whenever S > T + c, i.e. exactly
# when the target was behind (imported or finest-only history). Adding S - T
# (both from the snapshot) to the newest value gives S + c: increments commute,
# so none is lost. The same holds for replace (S - T may be negative) and on
# rows inserted concurrently (the conflict adds S to the newcomer's c). An
# increment written to the source rollup only (a finest-only ingest) after the
# snapshot reaches the target on the next run. The PostgreSQL test
# ``test_no_increment_is_lost_while_backfill_runs`` fails with GREATEST.
#
# Two backfills must not both add the same difference, so each chunk first
# takes a lock shared by all backfills (see ``Dialect.backfill``); the
# statement that follows sees the other run's committed chunk (READ COMMITTED
# takes a new snapshot per statement). SQLite allows one writer and each chunk
# is a single statement, so it needs neither.


def _in(
    connection: BaseDatabaseWrapper,
    column: str,
    field: str,
    values: Sequence[int] | None,
    params: list[Any],
) -> str:
    """`` AND column is one of values`` (one parameter, see ``sqllists``); None: no condition."""
    if values is None:
        return ""
    condition, value_params = any_of(connection, column, _field(field), values)
    params.extend(value_params)
    return f" AND {condition}"


def _comparison(
    connection: BaseDatabaseWrapper,
    *,
    source: int,
    target: int,
    start: int,
    end: int,
    project_ids: Sequence[int] | None,
    stat_codes: Sequence[int] | None,
    replace: bool,
) -> tuple[str, list[Any]]:
    """CTEs ``src``, ``tgt`` and ``cmp(p, st, e, b, d)``; ``d`` = source sum - stored count.

    Rows of ``cmp``: every target bucket in ``[start, end)`` with source data
    and, with ``replace``, every stored target row without source data too.
    """
    qn = connection.ops.quote_name
    table = qn(EventCount._meta.db_table)
    col = {name: qn(_column(name)) for name in ("project", "stat", "environment", "rollup")}
    col |= {"timestamp": qn(_column("timestamp")), "count": qn(_column("count"))}
    adapt = connection.ops.adapt_datetimefield_value
    lo, hi = adapt(epoch_to_datetime(start)), adapt(epoch_to_datetime(end))
    speaker = dialect(connection)
    bucket = speaker.bucket(f"s.{col['timestamp']}", target)
    total = speaker.sum_bigint(f"s.{col['count']}")

    params: list[Any] = [source, lo, hi]
    src_filters = _in(connection, f"s.{col['project']}", "project", project_ids, params)
    src_filters += _in(connection, f"s.{col['stat']}", "stat", stat_codes, params)
    params += [target, lo, hi]
    tgt_filters = _in(connection, f"t.{col['project']}", "project", project_ids, params)
    tgt_filters += _in(connection, f"t.{col['stat']}", "stat", stat_codes, params)

    key = "tgt.p = src.p AND tgt.st = src.st AND tgt.e = src.e AND tgt.b = src.b"
    orphans = (
        " UNION ALL SELECT tgt.p, tgt.st, tgt.e, tgt.b, -tgt.n FROM tgt "  # noqa: S608
        f"LEFT JOIN src ON {key} WHERE src.p IS NULL"
        if replace
        else ""
    )
    sql = (
        f"src AS (SELECT s.{col['project']} AS p, s.{col['stat']} AS st, "  # noqa: S608
        f"s.{col['environment']} AS e, {bucket} AS b, {total} AS n "
        f"FROM {table} s WHERE s.{col['rollup']} = %s "
        f"AND s.{col['timestamp']} >= %s AND s.{col['timestamp']} < %s{src_filters} "
        f"GROUP BY s.{col['project']}, s.{col['stat']}, s.{col['environment']}, {bucket}), "
        f"tgt AS (SELECT t.{col['project']} AS p, t.{col['stat']} AS st, "
        f"t.{col['environment']} AS e, t.{col['timestamp']} AS b, t.{col['count']} AS n "
        f"FROM {table} t WHERE t.{col['rollup']} = %s "
        f"AND t.{col['timestamp']} >= %s AND t.{col['timestamp']} < %s{tgt_filters}), "
        f"cmp AS (SELECT src.p, src.st, src.e, src.b, src.n - COALESCE(tgt.n, 0) AS d "
        f"FROM src LEFT JOIN tgt ON {key}{orphans})"
    )
    return sql, params


def backfill_chunk(
    *,
    source: int,
    target: int,
    start: int,
    end: int,
    project_ids: Sequence[int] | None = None,
    stat_codes: Sequence[int] | None = None,
    replace: bool = False,
    dry_run: bool = False,
) -> tuple[int, int]:
    """Rebuild ``target`` buckets starting in ``[start, end)`` (epoch seconds) from ``source``.

    Without ``replace`` each bucket becomes max(stored, source sum); with it,
    exactly the source sum. ``project_ids``/``stat_codes`` restrict the series
    (None: all). Returns ``(examined, written)``: target buckets compared and
    rows inserted or changed (would be, with ``dry_run``). One transaction.
    A dry run only reads, so it goes to the router's read database.
    """
    connection = _read_connection() if dry_run else _write_connection()
    ctes, params = _comparison(
        connection,
        source=source,
        target=target,
        start=start,
        end=end,
        project_ids=project_ids,
        stat_codes=stat_codes,
        replace=replace,
    )
    changes = "d <> 0" if replace else "d > 0"
    if dry_run:
        with overflow_as_data_error(connection), connection.cursor() as cursor:
            cursor.execute(
                f"WITH {ctes} SELECT COUNT(*), "  # noqa: S608
                f"COALESCE(SUM(CASE WHEN {changes} THEN 1 ELSE 0 END), 0) FROM cmp",
                params,
            )
            examined, written = cursor.fetchone()
        return int(examined), int(written)

    names = _names(connection)
    insert = (
        f"INSERT INTO {names['table']} ({names['columns']}) "  # noqa: S608
        f"SELECT p, st, e, %s, b, d FROM cmp WHERE {changes}"
    )
    # SQLite's SUM fails on an integer overflow (no silent REAL there), and
    # target + (sum - target) cannot overflow: only the error's type differs.
    with (
        overflow_as_data_error(connection),
        transaction.atomic(using=connection.alias),
        connection.cursor() as cursor,
    ):
        return dialect(connection).backfill(cursor, names, ctes, params, changes, insert, target)


def count_expired(rollup: int, before: int) -> int:
    """Rows of ``rollup`` whose bucket starts before epoch second ``before``."""
    return EventCount.objects.filter(rollup=rollup, timestamp__lt=epoch_to_datetime(before)).count()


def delete_expired(rollup: int, before: int, limit: int) -> int:
    """Delete up to ``limit`` rows of ``rollup`` starting before ``before``; how many went.

    Bounded by primary key so one call holds few locks and little undo;
    the (rollup, timestamp) index finds them.
    """
    connection = _write_connection()
    qn = connection.ops.quote_name
    table = qn(EventCount._meta.db_table)
    pk = qn(EventCount._meta.pk.column)
    rollup_col, ts_col = qn(_column("rollup")), qn(_column("timestamp"))
    sql = dialect(connection).delete_bounded(table, pk, f"{rollup_col} = %s AND {ts_col} < %s")
    cutoff = connection.ops.adapt_datetimefield_value(epoch_to_datetime(before))
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(sql, [rollup, cutoff, limit])
        return int(cursor.rowcount)


# The write buffer's side of the database (see ``buffer.py``): a batch of
# buffered increments is applied in one transaction together with its id, and
# reads learn in the same snapshot as the counts which batches are applied.


def apply_batches(
    batches: Mapping[str, Sequence[Row]],
    applied_at: int,
    before_commit: Callable[[], None] | None = None,
    after_commit: Callable[[], None] | None = None,
) -> tuple[set[str], int]:
    """Add the rows of every batch not applied yet and record their ids, in one transaction.

    Returns the ids applied by this call and the number of rows written. A
    batch whose id is already recorded is in the database: nothing of it is
    added. Rows of projects deleted since they were buffered are dropped.
    A bucket the rows would take past 2**63 - 1 is set to that maximum, with
    an error logged naming it and its batch; every other row is applied.
    ``before_commit`` runs inside the transaction, last; ``after_commit``
    once it has committed (the caller's transaction, if this runs in one:
    never, if that rolls back).
    """
    connection = _write_connection()
    qn = connection.ops.quote_name
    table = qn(AppliedBatch._meta.db_table)
    id_col, at_col = qn("batch_id"), qn("applied_at")
    at = connection.ops.adapt_datetimefield_value(epoch_to_datetime(applied_at))
    insert_new = dialect(connection).insert_new(table, f"{id_col}, {at_col}", id_col)
    applied: set[str] = set()
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            # One id at a time: the row count says whether it was new, on any
            # SQLite (no RETURNING needed). A concurrent flusher inserting the
            # same id makes this one wait for its commit, then skip the batch.
            for batch_id in sorted(batches):
                cursor.execute(insert_new, [batch_id, at])
                if cursor.rowcount == 1:
                    applied.add(batch_id)
        # A project deleted meanwhile would fail the foreign key at every retry.
        wanted = {row[0] for batch_id in applied for row in batches[batch_id]}
        projects = Project.objects.using(connection.alias).filter(AnyOf(F("pk"), wanted))
        alive = set(projects.values_list("pk", flat=True))
        totals: dict[tuple[int, int, str, int, int], int] = {}
        for batch_id in applied:
            for project_id, stat, environment, rollup, epoch, count in batches[batch_id]:
                if project_id in alive:
                    key = (project_id, stat, environment, rollup, epoch)
                    totals[key] = totals.get(key, 0) + count
        kept = [(*key, count) for key, count in totals.items() if count]
        try:
            # A savepoint: a bucket passing the maximum fails the statement
            # without losing the transaction, and is then applied clamped.
            with transaction.atomic(using=connection.alias):
                if any(not -MAX_COUNT <= row[5] <= MAX_COUNT for row in kept):
                    raise DataError("a bucket's buffered deltas add up past 2**63 - 1")
                upsert(kept)
        except DataError:
            for batch_id in sorted(applied):
                _apply_clamped(
                    connection, batch_id, [row for row in batches[batch_id] if row[0] in alive]
                )
        if before_commit is not None:
            before_commit()
        if after_commit is not None:
            transaction.on_commit(after_commit, using=connection.alias)
    return applied, len(kept)


MAX_COUNT = 2**63 - 1


def _apply_clamped(connection: BaseDatabaseWrapper, batch_id: str, rows: Sequence[Row]) -> None:
    """Add one batch's rows, setting buckets that would pass ``MAX_COUNT`` to it (logged)."""
    if not rows:
        return
    keys = {(p, s, e, r, epoch_to_datetime(t)): c for p, s, e, r, t, c in rows}
    stored = {
        (p, s, e, r, t): c
        for p, s, e, r, t, c in EventCount.objects.using(connection.alias)
        .select_for_update()
        .filter(
            AnyOf(F("project_id"), {key[0] for key in keys}),
            AnyOf(F("timestamp"), {key[4] for key in keys}),
        )
        .values_list("project_id", "stat", "environment", "rollup", "timestamp", "count")
        if (p, s, e, r, t) in keys
    }
    safe: list[Row] = []
    for (project_id, stat, environment, rollup, moment), count in keys.items():
        current = stored.get((project_id, stat, environment, rollup, moment), 0)
        if current + count > MAX_COUNT:
            logger.error(
                "Buffered batch %s takes bucket (project %s, stat %s, rollup %s, %s, "
                "environment %r) past 2**63 - 1; stored %s, adding %s: set to the maximum.",
                batch_id,
                project_id,
                stat,
                rollup,
                moment.isoformat(),
                environment,
                current,
                count,
            )
            count = MAX_COUNT - current
        if count:
            safe.append((project_id, stat, environment, rollup, int(moment.timestamp()), count))
    upsert(safe)


def read_cells(
    project_ids: Sequence[int],
    stats: Sequence[int],
    environment: str,
    rollup: int,
    first: int,
    last: int,
    batch_ids: Sequence[str],
) -> tuple[dict[tuple[int, int, int], int], set[str]]:
    """Stored counts keyed by ``(project_id, stat, bucket_start)``, and which of
    ``batch_ids`` are applied, from one statement: both come from the same snapshot.
    """
    connection = connections[router.db_for_read(EventCount)]
    qn = connection.ops.quote_name
    if not project_ids:
        project_ids = [0]  # matches nothing (an empty list would bind untyped)
    # Every list is one parameter: one statement text (one prepared
    # statement) for any number of projects, stats and batches.
    cells_sql, params = stats_sql(
        connection,
        project_ids,
        (),
        stats=stats,
        environment=environment,
        rollup=rollup,
        first=first,
        last=last,
    )
    # A fifth column, NULL here, carries the applied batch ids below.
    sql = f"SELECT q.project_id, q.stat, q.bucket, q.n, NULL FROM ({cells_sql}) q"  # noqa: S608
    if batch_ids:
        batch_field = cast("Field[Any, Any]", AppliedBatch._meta.get_field("batch_id"))
        applied_sql, applied_params = any_of(
            connection, qn(batch_field.column), batch_field, batch_ids
        )
        sql += (
            f" UNION ALL SELECT NULL, NULL, NULL, NULL, {qn(batch_field.column)} "  # noqa: S608
            f"FROM {qn(AppliedBatch._meta.db_table)} WHERE {applied_sql}"
        )
        params += applied_params
    cells: dict[tuple[int, int, int], int] = {}
    applied: set[str] = set()
    rows = prepared.fetch_all(connection, sql, params)
    for project_id, stat, epoch_value, count, batch_id in rows:
        if batch_id is not None:
            applied.add(batch_id)
        else:
            cells[(int(project_id), int(stat), int(epoch_value))] = int(count)
    return cells, applied


def organization_project_ids(organization_id: int) -> list[int]:
    """Primary keys of the organization's projects."""
    return list(
        Project.objects.filter(organization_id=organization_id).values_list("pk", flat=True)
    )


def project_ids(projects: QuerySet[Any]) -> list[int]:
    """Primary keys of a ``Project`` queryset."""
    return [int(pk) for pk in projects.values_list("pk", flat=True)]


def prune_applied_batches(before: int, pending: set[str], dry_run: bool = False) -> int:
    """Delete (or count) applied batch ids older than epoch ``before``, except ``pending``."""
    old = AppliedBatch.objects.filter(applied_at__lt=epoch_to_datetime(before)).exclude(
        AnyOf(F("batch_id"), pending)
    )
    if dry_run:
        return old.count()
    deleted, _ = old.delete()
    return deleted
