"""``incr_many`` failing part-way writes nothing: no partial batch, on either database.

The failures are real database errors (a trigger refusing a row, a bigint
overflow), raised after earlier statements of the same batch succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import DatabaseError, DataError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from project_stats import tsdb
from project_stats.models import EventCount, Project

from .factories import ProjectFactory

pytestmark = pytest.mark.django_db

TABLE = EventCount._meta.db_table


def snapshot() -> list[tuple[Any, ...]]:
    return list(
        EventCount.objects.order_by("pk").values_list(
            "pk", "project_id", "stat", "environment", "rollup", "timestamp", "count"
        )
    )


def big_batch(project: Project, now: datetime, buckets: int) -> list[tsdb.Increment]:
    """Increments in ``buckets`` distinct ten-second buckets, with an environment."""
    return [
        tsdb.Increment(project, "generated", now - timedelta(seconds=10 * i), 1, "production")
        for i in range(buckets)
    ]


def test_sqlite_a_failure_in_a_later_statement_undoes_the_earlier_ones(
    project: Project, now: datetime
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite writes a batch in several statements")
    per_statement = (connection.features.max_query_params or 999) // 6
    # Rows are written in key order: the refused project's rows come last.
    refused = ProjectFactory()
    assert refused.pk > project.pk
    tsdb.incr_many(big_batch(project, now, 5))  # rows the batch will add to
    before = snapshot()
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TRIGGER refuse_project BEFORE INSERT ON "{TABLE}" '
            f"WHEN NEW.project_id = {int(refused.pk)} "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    items = [*big_batch(project, now, per_statement), tsdb.Increment(refused, "received", now)]
    try:
        with CaptureQueriesContext(connection) as queries, pytest.raises(DatabaseError):
            tsdb.incr_many(items)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_project")
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) >= 2  # the first statements ran before the failure...
    assert snapshot() == before  # ...and were undone with it


@pytest.mark.parametrize("size", [300, 2000])
def test_a_stored_count_that_would_overflow_raises_and_rolls_back(
    project: Project, now: datetime, size: int
) -> None:
    # On SQLite an integer sum past 2**63 - 1 becomes a REAL: it must raise
    # instead, as PostgreSQL's bigint does, and undo the rest of the batch
    # (of several statements on SQLite at 2000 rows).
    full = ProjectFactory()
    tsdb.incr(full, "received", timestamp=now, count=tsdb.MAX_COUNT - 5)
    tsdb.incr_many(big_batch(project, now, 5))
    before = snapshot()
    items = [*big_batch(project, now, size), tsdb.Increment(full, "received", now, 10)]
    with pytest.raises(DataError, match="out of range"):
        tsdb.incr_many(items)
    assert snapshot() == before
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT DISTINCT typeof("count") FROM "{TABLE}"')  # noqa: S608
            assert cursor.fetchall() == [("integer",)]


def test_a_stored_count_may_reach_the_largest_bigint(project: Project, now: datetime) -> None:
    tsdb.incr(project, "received", timestamp=now, count=tsdb.MAX_COUNT - 5)
    tsdb.incr(project, "received", timestamp=now, count=5)
    [(_, count)] = tsdb.get_range(project, "received", now, now, rollup=10)
    assert count == tsdb.MAX_COUNT and isinstance(count, int)


@pytest.mark.server_db
def test_a_batch_failing_inside_an_outer_transaction_leaves_it_usable(
    project: Project, now: datetime
) -> None:
    full = ProjectFactory()
    tsdb.incr(full, "received", timestamp=now, count=tsdb.MAX_COUNT)
    with transaction.atomic():
        tsdb.incr(project, "received", timestamp=now, count=3)
        with pytest.raises(DatabaseError):
            tsdb.incr_many([(project, "received", now, 1), (full, "received", now, 1)])
        # The batch's savepoint rolled back; the outer transaction goes on.
        tsdb.incr(project, "received", timestamp=now, count=4)
    assert [c for _, c in tsdb.get_range(project, "received", now, now, rollup=10)] == [7]


def test_a_batch_whose_sum_overflows_a_bucket_is_refused_before_writing(
    project: Project, now: datetime
) -> None:
    with pytest.raises(ValueError, match="2\\*\\*63"):
        tsdb.incr_many([(project, "received", now, tsdb.MAX_COUNT), (project, "received", now, 1)])
    assert not EventCount.objects.exists()


def test_items_failing_late_in_a_generator_write_nothing(project: Project, now: datetime) -> None:
    def items() -> Any:
        yield from big_batch(project, now, 500)
        raise RuntimeError("the producer broke")

    with pytest.raises(RuntimeError):
        tsdb.incr_many(items())
    assert not EventCount.objects.exists()


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_a_batch_chosen_as_a_deadlock_victim_is_written_once_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if connection.vendor != "mysql":
        pytest.skip("InnoDB's deadlock victim: a batch written on its own is retried once")
    project, heavy = ProjectFactory(), ProjectFactory()
    first, second = 1_700_000_000, 1_700_000_010
    tsdb.incr_many([(project, "received", t, 1) for t in (first, second)], rollups=[10])
    # The other transaction changes many rows first: InnoDB rolls back the
    # transaction that changed fewer, the batch.
    tsdb.incr_many([(heavy, "received", 1_600_000_000 + 10 * i, 1) for i in range(300)])
    table = connection.ops.quote_name(TABLE)
    first_pk, second_pk = (
        EventCount.objects.filter(project=project)
        .order_by("timestamp")
        .values_list("pk", flat=True)
    )
    locked, failures = threading.Event(), []

    def other() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                update = f"UPDATE {table} SET count = count + 1 WHERE "  # noqa: S608
                cursor.execute(update + "project_id = %s", [heavy.pk])
                cursor.execute(update + "id = %s", [second_pk])
                locked.set()
                # Until the batch holds the first bucket and waits for the second.
                for _ in range(600):
                    cursor.execute("SHOW ENGINE INNODB STATUS")
                    # The live transactions (not the last deadlock's report).
                    status = cursor.fetchone()[2].partition("\nTRANSACTIONS\n")[2]
                    if "LOCK WAIT" in status and "ON DUPLICATE KEY" in status:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("the batch never waited for the second bucket")
                cursor.execute(update + "id = %s", [first_pk])
        except BaseException as exc:  # surfaced below
            failures.append(exc)
            locked.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=other)
    thread.start()
    assert locked.wait(timeout=60)
    with caplog.at_level(logging.WARNING, logger="project_stats.flush"):
        tsdb.incr_many([(project, "received", t, 1) for t in (first, second)], rollups=[10])
    thread.join(timeout=60)
    assert not failures
    assert "Deadlock" in caplog.text  # the batch was the victim, and ran again
    counts = EventCount.objects.filter(project=project).values_list("count", flat=True)
    assert sorted(counts) == [3, 3]
