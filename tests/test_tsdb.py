from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from project_stats import tsdb
from project_stats.conf import project_stats_settings
from project_stats.constants import STAT_NAMES
from project_stats.models import EventCount, Project
from project_stats.tsdb.rollups import bucket_start

from .factories import ProjectFactory
from .redis_servers import redis_only_rows

pytestmark = pytest.mark.django_db


def rows(project: Project) -> dict[tuple[str, str, int, int], int]:
    tsdb.flush()  # with a write buffer (test_tsdb_buffered.py), what it holds
    recorded = {
        (r.get_stat_display(), r.environment, r.rollup, int(r.timestamp.timestamp())): r.count
        for r in EventCount.objects.filter(project=project)
    }
    # With a buffer, the rollups kept in Redis only are recorded there.
    config = project_stats_settings.BUFFER
    if config is not None:
        for (pk, stat, environment, rollup, bucket), count in redis_only_rows(config).items():
            if pk == project.pk and count:
                recorded[(STAT_NAMES[stat], environment, rollup, bucket)] = count
    return recorded


def stored_anything() -> bool:
    tsdb.flush()
    config = project_stats_settings.BUFFER
    return EventCount.objects.exists() or bool(config and redis_only_rows(config))


def test_incr_writes_every_rollup(project: Project, now: datetime) -> None:
    tsdb.incr(project, "received", timestamp=now, count=3)
    assert rows(project) == {
        ("received", "", 10, bucket_start(now, 10)): 3,
        ("received", "", 3600, bucket_start(now, 3600)): 3,
        ("received", "", 86400, bucket_start(now, 86400)): 3,
    }


def test_incr_adds_to_the_stored_value(project: Project, now: datetime) -> None:
    tsdb.incr(project, "received", timestamp=now)
    tsdb.incr(project, "received", timestamp=now + timedelta(seconds=5), count=4)
    tsdb.incr(project, "received", timestamp=now + timedelta(seconds=60))
    counts = rows(project)
    assert counts[("received", "", 10, bucket_start(now, 10))] == 5
    assert counts[("received", "", 3600, bucket_start(now, 3600))] == 6


def test_incr_accepts_epoch_seconds(project: Project, now: datetime) -> None:
    tsdb.incr(project.pk, "rejected", timestamp=now.timestamp())
    assert rows(project) == {
        ("rejected", "", r, bucket_start(now, r)): 1 for r in (10, 3600, 86400)
    }


def test_incr_defaults_to_now(project: Project) -> None:
    tsdb.incr(project, "received")
    assert len(rows(project)) == 3


def test_incr_with_environment_writes_the_total_too(project: Project, now: datetime) -> None:
    tsdb.incr(project, "generated", timestamp=now, environment="production", count=2)
    tsdb.incr(project, "generated", timestamp=now, environment="staging")
    counts = rows(project)
    hour = bucket_start(now, 3600)
    assert counts[("generated", "production", 3600, hour)] == 2
    assert counts[("generated", "staging", 3600, hour)] == 1
    assert counts[("generated", "", 3600, hour)] == 3


def test_incr_restricted_to_some_rollups(project: Project, now: datetime) -> None:
    tsdb.incr(project, "received", timestamp=now, rollups=[10])
    assert rows(project) == {("received", "", 10, bucket_start(now, 10)): 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stat": "nope"},
        {"count": -1},
        {"count": 2**63},
        {"count": 1.5},
        {"count": True},
        {"rollups": [60]},
        {"environment": "x" * 65},
        {"environment": "nul\x00"},
        {"timestamp": datetime(2024, 1, 1)},  # noqa: DTZ001 - naive on purpose
        {"timestamp": float("nan")},
    ],
)
def test_incr_refuses_bad_input_and_writes_nothing(project: Project, kwargs: dict) -> None:
    args = {"stat": "received", **kwargs}
    stat = args.pop("stat")
    with pytest.raises(ValueError):
        tsdb.incr(project, stat, **args)
    assert not stored_anything()


def test_incr_refuses_an_unsaved_project() -> None:
    with pytest.raises(ValueError):
        tsdb.incr(Project(slug="x"), "received")


def test_incr_is_one_statement(project: Project, now: datetime) -> None:
    with CaptureQueriesContext(connection) as ctx:
        tsdb.incr(project, "generated", timestamp=now, environment="production")
    statements = [q["sql"] for q in ctx.captured_queries if "INSERT" in q["sql"]]
    assert len(statements) == 1


def test_incr_many_equals_the_same_incr_calls(
    now: datetime, django_capture_on_commit_callbacks: Any
) -> None:
    a, b = ProjectFactory(), ProjectFactory()
    items = [
        (a, "received", now, 1, None),
        (a, "received", now + timedelta(seconds=3), 2, None),
        (b, "rejected", now - timedelta(hours=2), 5, None),
        (a, "generated", now, 1, "production"),
        (a, "generated", now + timedelta(days=1), 7, "staging"),
        tsdb.Increment(b, "received", now.timestamp(), 4),
    ]
    tsdb.incr_many(items)
    batch = {p.pk: rows(p) for p in (a, b)}
    # As committed: the buffer's Redis-only buckets are forgotten on commit.
    with django_capture_on_commit_callbacks(execute=True):
        tsdb.delete(Project.objects.all())
    for item in items:
        project, stat, timestamp, count, environment = item
        tsdb.incr(project, stat, timestamp=timestamp, count=count, environment=environment)
    assert {p.pk: rows(p) for p in (a, b)} == batch
    assert batch[a.pk][("received", "", 10, bucket_start(now, 10))] == 3


def test_incr_many_writes_each_row_once(project: Project, now: datetime) -> None:
    written = tsdb.incr_many([(project, "received", now)] * 50)
    assert written == 3
    assert rows(project)[("received", "", 10, bucket_start(now, 10))] == 50


def test_incr_many_is_all_or_nothing_on_bad_items(project: Project, now: datetime) -> None:
    with pytest.raises(ValueError):
        tsdb.incr_many([(project, "received", now), (project, "bogus", now)])
    assert not stored_anything()


def test_incr_many_large_batch_spans_statement_chunks(now: datetime) -> None:
    projects = ProjectFactory.create_batch(5)
    # Hours: a rollup the database keeps with or without a write buffer.
    items = [(projects[i % 5], "received", now - timedelta(hours=i), 1) for i in range(2000)]
    written = tsdb.incr_many(items, rollups=[3600])
    assert written == 2000
    tsdb.flush()
    assert EventCount.objects.filter(rollup=3600).count() == 2000


def test_get_range_default_day_is_24_hourly_points_newest_last(
    project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)
    tsdb.incr(project, "received", timestamp=now - timedelta(hours=23), count=5)
    tsdb.incr(project, "received", timestamp=now - timedelta(hours=25), count=100)
    points = tsdb.get_range(project, "received", now - timedelta(seconds=86399), now, now=now)
    assert len(points) == 24
    assert [t for t, _ in points] == [
        bucket_start(now, 3600) - 3600 * i for i in reversed(range(24))
    ]
    assert points[-1] == (bucket_start(now, 3600), 2)
    assert points[0] == (bucket_start(now, 3600) - 23 * 3600, 5)
    assert sum(c for _, c in points) == 7


@pytest.mark.parametrize(
    ("since", "rollup", "points"),
    [(3600, 10, 361), (3601, 3600, 2), (7 * 86400 + 1, 86400, 8), (86399, 3600, 24)],
)
def test_get_range_series_vectors(
    project: Project, now: datetime, since: int, rollup: int, points: int
) -> None:
    start = now - timedelta(seconds=since)
    assert tsdb.get_optimal_rollup(start, now, now=now) == rollup
    result = tsdb.get_range(project, "received", start, now, now=now)
    assert len(result) == points
    assert result[-1][0] == bucket_start(now, rollup)


def test_get_range_with_explicit_rollup(project: Project, now: datetime) -> None:
    tsdb.incr(project, "received", timestamp=now, count=9)
    result = tsdb.get_range(project, "received", now - timedelta(days=2), now, rollup=86400)
    assert result == [
        (bucket_start(now, 86400) - 2 * 86400, 0),
        (bucket_start(now, 86400) - 86400, 0),
        (bucket_start(now, 86400), 9),
    ]


def test_get_range_keeps_stats_environments_and_projects_apart(
    project: Project, other_project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=1)
    tsdb.incr(project, "rejected", timestamp=now, count=10)
    tsdb.incr(other_project, "received", timestamp=now, count=100)
    tsdb.incr(project, "generated", timestamp=now, count=3, environment="production")
    tsdb.incr(project, "generated", timestamp=now, count=4, environment="staging")

    def total(**kwargs: object) -> int:
        start = now - timedelta(hours=1)
        return sum(c for _, c in tsdb.get_range(project, start=start, end=now, **kwargs))  # type: ignore[arg-type]

    assert total(stat="received") == 1
    assert total(stat="rejected") == 10
    assert total(stat="generated") == 7
    assert total(stat="generated", environment="production") == 3
    assert total(stat="generated", environment="staging") == 4
    assert total(stat="generated", environment="nowhere") == 0


def test_get_range_is_one_query_whatever_the_points(project: Project, now: datetime) -> None:
    for span, rollup in ((3600, 10), (86400 * 90, 86400)):
        with CaptureQueriesContext(connection) as ctx:
            tsdb.get_range(project, "received", now - timedelta(seconds=span), now, rollup=rollup)
        assert len(ctx.captured_queries) == 1


def test_get_range_empty_when_start_after_end(project: Project, now: datetime) -> None:
    assert tsdb.get_range(project, "received", now, now - timedelta(seconds=1), rollup=10) == []


def test_get_range_refuses_unconfigured_rollup_and_too_many_points(
    project: Project, now: datetime
) -> None:
    with pytest.raises(tsdb.QueryError):
        tsdb.get_range(project, "received", now - timedelta(hours=1), now, rollup=60)
    with pytest.raises(tsdb.QueryError, match="limit is 10000"):
        tsdb.get_range(project, "received", now - timedelta(days=90), now, rollup=10)


def test_settings_are_read_at_call_time(settings, project: Project, now: datetime) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"ROLLUPS": ((60, 60), (3600, 24)), "MAX_POINTS": 5}
    tsdb.incr(project, "received", timestamp=now)
    assert sorted(EventCount.objects.values_list("rollup", flat=True)) == [60, 3600]
    assert tsdb.get_optimal_rollup(now - timedelta(minutes=30), now, now=now) == 60
    with pytest.raises(tsdb.QueryError, match="limit is 5"):
        tsdb.get_range(project, "received", now - timedelta(minutes=30), now, now=now)


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_concurrent_increments_are_never_lost(now: datetime) -> None:
    project = ProjectFactory()
    threads_n, per_thread = 8, 150
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                tsdb.incr(project, "received", timestamp=now)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts = {rollup: count for (_, _, rollup, _), count in rows(project).items()}
    assert counts == {10: 1200, 3600: 1200, 86400: 1200}


def test_get_range_total_sums_in_one_query(now: datetime) -> None:
    projects = ProjectFactory.create_batch(3)
    for i, p in enumerate(projects):
        tsdb.incr(p, "received", timestamp=now, count=10**i)
    tsdb.incr(projects[0], "received", timestamp=now - timedelta(hours=2), count=7)
    tsdb.incr(projects[0], "rejected", timestamp=now, count=1000)
    start = now - timedelta(hours=3)
    with CaptureQueriesContext(connection) as ctx:
        total = tsdb.get_range_total(projects, "received", start, now, rollup=3600)
    assert len(ctx.captured_queries) == 1
    assert total[-1] == (bucket_start(now, 3600), 111)
    assert total[-3] == (bucket_start(now, 3600) - 7200, 7)
    assert len(total) == 4
    qs = Project.objects.filter(pk__in=[p.pk for p in projects[1:]])
    with CaptureQueriesContext(connection) as ctx:
        assert tsdb.get_range_total(qs, "received", start, now, rollup=3600)[-1][1] == 110
    assert len(ctx.captured_queries) == 1


def test_get_range_by_project_zero_fills_every_project(now: datetime) -> None:
    a, b, c = ProjectFactory.create_batch(3)
    tsdb.incr(a, "received", timestamp=now, count=2)
    tsdb.incr(b, "received", timestamp=now - timedelta(hours=1), count=3)
    with CaptureQueriesContext(connection) as ctx:
        result = tsdb.get_range_by_project(
            [a, b.pk, c], "received", now - timedelta(hours=1), now, rollup=3600
        )
    assert len(ctx.captured_queries) == 1
    hour = bucket_start(now, 3600)
    assert result == {
        a.pk: [(hour - 3600, 0), (hour, 2)],
        b.pk: [(hour - 3600, 3), (hour, 0)],
        c.pk: [(hour - 3600, 0), (hour, 0)],
    }
    assert tsdb.get_range_by_project([], "received", now, now) == {}


def test_environment_exists(project: Project, other_project: Project, now: datetime) -> None:
    tsdb.incr(other_project, "generated", timestamp=now, environment="production")
    org = project.organization
    assert tsdb.environment_exists(org, "production")
    assert tsdb.environment_exists(org.pk, "production")
    assert not tsdb.environment_exists(org, "staging")
    assert not tsdb.environment_exists(org, "")
    assert not tsdb.environment_exists(org, "x" * 100)
    assert not tsdb.environment_exists(ProjectFactory().organization, "production")


def _plan(sql: str) -> str:
    """The database's plan of ``sql`` (a captured statement, values inlined)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Tiny test tables would be read whole: ask which index serves it.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}")
        elif connection.vendor == "mysql":
            cursor.execute(f"EXPLAIN FORMAT=JSON {sql}")
            return str(cursor.fetchone()[0])
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_environment_check_probes_an_index_per_project_instead_of_reading_rows(
    project: Project, other_project: Project, now: datetime, environment: str
) -> None:
    # The cost must not grow with the rows stored: each project is one probe
    # on (project, environment), never a walk through the project's buckets.
    for offset in range(20):
        tsdb.incr(project, "generated", timestamp=now - timedelta(hours=offset))
        tsdb.incr(other_project, "received", timestamp=now - timedelta(hours=offset))
    tsdb.incr(other_project, "generated", timestamp=now, environment="production")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        tsdb.environment_exists(project.organization, environment)
        [query] = queries.captured_queries
        plan = _plan(query["sql"])
    assert "project_stats_ec_project_env" in plan
    if connection.vendor == "sqlite":
        assert "(project_id=? AND environment=?)" in plan
    _assert_probes_the_environment_index(plan)


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)  # MariaDB's ANALYZE TABLE commits
def test_environment_check_probes_the_index_when_most_rows_have_none(
    project: Project, now: datetime
) -> None:
    # Statistics see (project, environment) as no better than the project
    # alone when nearly every row has environment "": the planner must still
    # probe it, not walk the project's rows.
    second = int(now.timestamp())
    tsdb.incr_many([(project, "received", second - 10 * i, 1) for i in range(3000)], rollups=[10])
    tsdb.incr(project, "generated", timestamp=now, environment="production")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {'TABLE ' if connection.vendor == 'mysql' else ''}{TABLE}")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert not tsdb.environment_exists(project.organization, "staging")
        [query] = queries.captured_queries
        plan = _plan(query["sql"])
    assert "project_stats_ec_project_env" in plan
    _assert_probes_the_environment_index(plan)


def _assert_probes_the_environment_index(plan: str) -> None:
    if connection.vendor == "mysql":
        # No partial indexes: the same index, on every row.
        probe = json.loads(plan)["query_block"]
        tables = [t for t in _plan_tables(probe) if t.get("key") == "project_stats_ec_project_env"]
        assert tables
        assert [t["access_type"] for t in tables] == ["ref"] * len(tables)
        assert all(t["used_key_parts"] == ["project_id", "environment"] for t in tables)


TABLE = EventCount._meta.db_table


def _plan_tables(node: object) -> list[dict[str, Any]]:
    """Every ``table`` entry of a MariaDB JSON plan."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("table"), dict):
            found.append(node["table"])
        for value in node.values():
            found += _plan_tables(value)
    elif isinstance(node, list):
        for value in node:
            found += _plan_tables(value)
    return found


def test_delete_removes_every_row_of_the_given_projects_only(
    project: Project, other_project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)
    tsdb.incr(project, "generated", timestamp=now, environment="production")
    tsdb.incr(other_project, "received", timestamp=now)
    with CaptureQueriesContext(connection) as ctx:
        assert tsdb.delete([project]) == 9
    assert len(ctx.captured_queries) == 1
    assert rows(project) == {}
    assert len(rows(other_project)) == 3
    assert tsdb.delete([]) == 0
    assert tsdb.delete([other_project.pk]) == 3


def test_delete_refuses_what_is_not_a_project() -> None:
    with pytest.raises(ValueError, match="project"):
        tsdb.delete(["pump-station"])  # type: ignore[list-item]


def test_get_range_by_project_refuses_more_than_max_total_points_before_reading(
    settings,  # type: ignore[no-untyped-def]
    now: datetime,
    django_assert_num_queries: Any,
) -> None:
    settings.PROJECT_STATS = {"MAX_TOTAL_POINTS": 48}
    start = now - timedelta(hours=23)
    with (
        django_assert_num_queries(0),
        pytest.raises(
            tsdb.QueryError, match="3 series of 24 points would have 72 points; the limit is 48"
        ),
    ):
        tsdb.get_range_by_project([1, 2, 3], "received", start, now, rollup=3600)
    assert len(tsdb.get_range_by_project([1, 2], "received", start, now, rollup=3600)) == 2


def test_environments_are_compared_byte_for_byte(project: Project, now: datetime) -> None:
    # MariaDB's default collation would merge these buckets and answer each
    # other's reads (case, accents, trailing spaces).
    names = ["Production", "production", "production ", "prödüction"]
    for count, environment in enumerate(names, start=1):
        tsdb.incr(project, "received", timestamp=now, count=count, environment=environment)
    start = bucket_start(now, 3600)
    for count, environment in enumerate(names, start=1):
        series = tsdb.get_range(
            project, "received", start, start, rollup=3600, environment=environment, now=now
        )
        assert series == [(start, count)]
    assert not tsdb.environment_exists(project.organization, "PRODUCTION")
