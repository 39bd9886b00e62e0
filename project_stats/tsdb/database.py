"""The relational backend: additive upserts and range reads on ``EventCount``.

Every write is a single ``INSERT ... ON CONFLICT DO UPDATE SET count = count +
excluded.count`` statement, so concurrent writers on one bucket serialize in
the database and no increment is lost (no read-modify-write in Python).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, QuerySet, Sum

from ..models import EventCount
from .rollups import epoch_to_datetime

Row = tuple[int, int, str, int, int, int]
"""``(project_id, stat_code, environment, rollup, bucket_epoch, count)``."""

SUPPORTED_VENDORS = frozenset({"postgresql", "sqlite"})


def _column(name: str) -> str:
    return cast("Field[Any, Any]", EventCount._meta.get_field(name)).column


def _names(connection: BaseDatabaseWrapper) -> dict[str, str]:
    """Quoted table and column names: the only text interpolated into our SQL."""
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
    }


def _write_connection() -> BaseDatabaseWrapper:
    return connections[router.db_for_write(EventCount)]


def upsert(rows: Sequence[Row]) -> None:
    """Add each row's count to its bucket, creating missing buckets.

    Rows must be distinct by key (aggregate first). They are written in key
    order so that concurrent batches lock rows in the same order.
    """
    if not rows:
        return
    rows = sorted(rows)
    connection = _write_connection()
    names = _names(connection)
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _upsert_postgresql(cursor, names, rows)
        elif connection.vendor == "sqlite":
            _upsert_values(cursor, connection, names, rows)
        else:
            raise NotImplementedError(
                f"project_stats supports PostgreSQL and SQLite, not {connection.vendor}"
            )


def _upsert_postgresql(cursor: Any, names: dict[str, str], rows: Sequence[Row]) -> None:
    # One statement for any batch size: the rows travel as six arrays.
    columns = list(zip(*rows, strict=True))
    sql = (
        f"INSERT INTO {names['table']} ({names['columns']}) "  # noqa: S608
        "SELECT p, s, e, r, to_timestamp(t), c FROM unnest("
        "%s::bigint[], %s::smallint[], %s::varchar[], %s::integer[], %s::bigint[], %s::bigint[]"
        ") AS u(p, s, e, r, t, c) "
        f"ON CONFLICT ({names['conflict']}) DO UPDATE "
        f"SET {names['count']} = {names['table']}.{names['count']} + EXCLUDED.{names['count']}"
    )
    cursor.execute(sql, [list(column) for column in columns])


def _upsert_values(
    cursor: Any, connection: BaseDatabaseWrapper, names: dict[str, str], rows: Sequence[Row]
) -> None:
    max_params = connection.features.max_query_params or 999
    per_statement = max(1, max_params // 6)
    adapt = connection.ops.adapt_datetimefield_value
    for offset in range(0, len(rows), per_statement):
        chunk = rows[offset : offset + per_statement]
        params: list[Any] = []
        for project_id, stat, environment, rollup, epoch, count in chunk:
            params += [
                project_id,
                stat,
                environment,
                rollup,
                adapt(epoch_to_datetime(epoch)),
                count,
            ]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
        cursor.execute(
            f"INSERT INTO {names['table']} ({names['columns']}) VALUES {values} "  # noqa: S608
            f"ON CONFLICT ({names['conflict']}) DO UPDATE "
            f"SET {names['count']} = {names['table']}.{names['count']} + excluded.{names['count']}",
            params,
        )


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
    """Stored counts of one series for bucket starts ``first..last`` (inclusive)."""
    rows = (
        _buckets(stat, environment, rollup, first, last)
        .filter(project_id=project_id)
        .values_list("timestamp", "count")
    )
    return {int(timestamp.timestamp()): count for timestamp, count in rows}


def read_buckets_summed(
    project_ids: QuerySet[Any] | Sequence[int],
    stat: int,
    environment: str,
    rollup: int,
    first: int,
    last: int,
) -> dict[int, int]:
    """Counts of many projects' series summed per bucket, in the database."""
    rows = (
        _buckets(stat, environment, rollup, first, last)
        .filter(project_id__in=project_ids)
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
        .filter(project_id__in=project_ids)
        .values_list("project_id", "timestamp", "count")
    )
    return {(pk, int(timestamp.timestamp())): count for pk, timestamp, count in rows}


def environment_recorded(organization_id: int, environment: str) -> bool:
    """Whether any project of the organization has counts for ``environment``."""
    return EventCount.objects.filter(
        project__organization_id=organization_id, environment=environment
    ).exists()


def delete_projects(project_ids: Sequence[int]) -> int:
    """Delete all rows of these projects; returns how many were deleted."""
    if not project_ids:
        return 0
    deleted, _ = EventCount.objects.filter(project_id__in=project_ids).delete()
    return deleted
