from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DataError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import example, given, settings
from hypothesis import strategies as st

from project_stats import tsdb
from project_stats.models import EventCount, Project
from project_stats.tsdb.rollups import bucket_start

from .conftest import NOW
from .factories import ProjectFactory

pytestmark = pytest.mark.django_db

HOUR = bucket_start(NOW, 3600)  # 13:00, open at NOW (13:37:42.5)
H10, H11, H12 = (datetime.fromtimestamp(HOUR - n * 3600, UTC) for n in (3, 2, 1))
Key = tuple[int, str, str, int]  # project, stat, environment, bucket start


def stored(rollup: int) -> dict[Key, int]:
    return {
        (r.project_id, r.get_stat_display(), r.environment, int(r.timestamp.timestamp())): r.count
        for r in EventCount.objects.filter(rollup=rollup)
    }


def all_rows() -> list[tuple[object, ...]]:
    return sorted(EventCount.objects.values_list())


def fine_history(project: Project, seed: int = 0) -> list[tsdb.Increment]:
    """Scattered increments over 10:00-13:00 plus a few in the open 13:00 hour."""
    rng = random.Random(seed)
    items = []
    for _ in range(300):
        when = H10 + timedelta(seconds=rng.randrange(3 * 3600 + 1800))
        stat = rng.choice(["received", "rejected", "generated"])
        env = rng.choice(["production", "staging"]) if stat == "generated" else None
        items.append(tsdb.Increment(project, stat, when, rng.randint(1, 9), env))
    return items


def expected_sums(items: list[tsdb.Increment], rollup: int) -> dict[Key, int]:
    sums: Counter[Key] = Counter()
    for item in items:
        assert isinstance(item.project, Project) and isinstance(item.timestamp, datetime)
        bucket = bucket_start(item.timestamp, rollup)
        for env in ("", item.environment) if item.environment else ("",):
            sums[(item.project.pk, str(item.stat), env, bucket)] += item.count
    return dict(sums)


def closed_hours(sums: dict[Key, int]) -> dict[Key, int]:
    return {k: v for k, v in sums.items() if k[3] < HOUR}


def test_ten_second_history_becomes_hourly_counts(project: Project) -> None:
    items = fine_history(project)
    tsdb.incr_many(items, rollups=[10])
    [result] = tsdb.backfill([3600], since=H10, until=NOW, now=NOW)

    want = closed_hours(expected_sums(items, 3600))
    assert stored(3600) == want
    # Every environment's series and the "" total, for all three closed hours.
    assert {k[2] for k in want} == {"", "production", "staging"}
    assert {k[3] for k in want} == {HOUR - 3 * 3600, HOUR - 2 * 3600, HOUR - 3600}
    assert (result.rollup, result.source, result.start, result.end) == (
        3600,
        10,
        H10.timestamp(),
        HOUR,
    )
    assert result.buckets == 3 and result.chunks == 3
    assert result.examined == result.written == len(want)


def test_rebuilt_hours_equal_what_incr_writes_in_real_time(
    project: Project, other_project: Project
) -> None:
    tsdb.incr_many(fine_history(project, seed=1), rollups=[10])
    tsdb.incr_many([item._replace(project=other_project) for item in fine_history(project, seed=1)])
    tsdb.backfill([3600], since=H10, until=NOW, now=NOW)

    def hours_of(p: Project) -> dict[tuple[str, str, int], int]:
        return {k[1:]: v for k, v in stored(3600).items() if k[0] == p.pk and k[3] < HOUR}

    assert hours_of(project) == hours_of(other_project) != {}


def test_backfilled_rows_are_the_rows_incr_updates(project: Project) -> None:
    # The bucket SQL must produce exactly the stored timestamp (on SQLite: the
    # same text) or this incr would add a second row instead of colliding.
    tsdb.incr(project, "received", timestamp=H11, count=4, rollups=[10])
    tsdb.backfill([3600], since=H11, until=NOW, now=NOW)
    tsdb.incr(project, "received", timestamp=H11 + timedelta(minutes=5), rollups=[3600])
    assert stored(3600) == {(project.pk, "received", "", int(H11.timestamp())): 5}


def test_second_run_changes_nothing(project: Project) -> None:
    tsdb.incr_many(fine_history(project), rollups=[10])
    tsdb.backfill(since=H10, until=NOW, now=NOW)
    before = all_rows()
    again = tsdb.backfill(since=H10, until=NOW, now=NOW)
    assert all_rows() == before
    assert [r.written for r in again] == [0, 0]
    assert again[0].examined > 0  # (the 5 March day is still open)


def test_default_targets_go_finest_first_so_days_come_from_rebuilt_hours(
    project: Project,
) -> None:
    day = datetime(2024, 3, 4, tzinfo=UTC)  # closed at NOW
    items = [
        tsdb.Increment(project, "received", day + timedelta(minutes=7 * i), i % 5 + 1)
        for i in range(24 * 60 // 7)
    ]
    tsdb.incr_many(items, rollups=[10])
    results = tsdb.backfill(since=day, until=day + timedelta(days=1), now=NOW)

    assert [(r.rollup, r.source) for r in results] == [(3600, 10), (86400, 3600)]
    total = sum(item.count for item in items)
    assert stored(86400) == {(project.pk, "received", "", int(day.timestamp())): total}
    assert sum(stored(3600).values()) == total
    assert len(stored(3600)) == 24


def test_default_range_is_the_closed_buckets_overlapping_source_retention(
    project: Project,
) -> None:
    # Default 10s retention at NOW reaches back to 12:37:42.5: only the 12:00
    # hour overlaps it and is closed, and it is rebuilt from all its 10s data.
    for when, count in (
        (H11 + timedelta(minutes=30), 100),  # hour outside the window
        (H12 + timedelta(minutes=10), 2),  # inside the 12:00 hour, already expired
        (H12 + timedelta(minutes=50), 3),
        (datetime.fromtimestamp(HOUR, UTC) + timedelta(minutes=5), 1000),  # open hour
    ):
        tsdb.incr(project, "received", timestamp=when, count=count, rollups=[10])
    [result] = tsdb.backfill([3600], now=NOW)
    assert stored(3600) == {(project.pk, "received", "", int(H12.timestamp())): 5}
    assert (result.start, result.end) == (H12.timestamp(), HOUR)


def test_never_lowers_a_count_whose_source_was_pruned(project: Project) -> None:
    for minute in (5, 25, 45):
        tsdb.incr(project, "received", timestamp=H11 + timedelta(minutes=minute), count=10)
    # As if pruning had removed the first 10s bucket.
    EventCount.objects.filter(rollup=10, timestamp__lt=H11 + timedelta(minutes=20)).delete()
    [result] = tsdb.backfill([3600], since=H11, until=NOW, now=NOW)
    assert stored(3600) == {(project.pk, "received", "", int(H11.timestamp())): 30}
    assert result.written == 0


def test_raises_a_count_that_is_behind_its_source(project: Project) -> None:
    tsdb.incr(project, "received", timestamp=H11, count=5)  # real time: every rollup
    tsdb.incr(project, "received", timestamp=H11 + timedelta(minutes=9), count=3, rollups=[10])
    tsdb.backfill([3600], since=H11, until=NOW, now=NOW)
    assert stored(3600)[(project.pk, "received", "", int(H11.timestamp()))] == 8


@pytest.fixture
def six_hours_of_10s(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"ROLLUPS": ((10, 6 * 360), (3600, 168), (86400, 90))}


@pytest.mark.usefixtures("six_hours_of_10s")
def test_replace_corrects_inflated_counts_and_zeroes_orphans(project: Project) -> None:
    tsdb.incr(project, "generated", timestamp=H11, count=7, environment="production")
    # Inflated: written to the hourly rollup only, twice.
    tsdb.incr(
        project, "generated", timestamp=H11, count=50, environment="production", rollups=[3600]
    )
    tsdb.incr(project, "received", timestamp=H12, count=9, rollups=[3600])  # no 10s data
    before = stored(3600)

    plain = tsdb.backfill([3600], since=H10, until=NOW, now=NOW)
    assert stored(3600) == before and plain[0].written == 0  # max() keeps them

    [result] = tsdb.backfill([3600], since=H10, until=NOW, now=NOW, replace=True)
    h11, h12 = int(H11.timestamp()), int(H12.timestamp())
    assert stored(3600) == {
        (project.pk, "generated", "", h11): 7,
        (project.pk, "generated", "production", h11): 7,
        (project.pk, "received", "", h12): 0,
    }
    assert (result.written, result.skipped) == (3, 0)


@pytest.mark.usefixtures("six_hours_of_10s")
def test_replace_leaves_buckets_not_wholly_inside_source_retention(project: Project) -> None:
    # 6 hours of 10s retention at NOW reach back to 07:37:42.5: the 07:00 hour
    # may have lost source data, so replace keeps its inflated count.
    h07 = datetime.fromtimestamp(HOUR - 6 * 3600, UTC)
    for hour in (h07, H12):
        tsdb.incr(project, "received", timestamp=hour + timedelta(minutes=40), count=2)
        tsdb.incr(project, "received", timestamp=hour, count=10, rollups=[3600])
    [result] = tsdb.backfill([3600], since=h07, until=NOW, now=NOW, replace=True)
    assert stored(3600) == {
        (project.pk, "received", "", int(h07.timestamp())): 12,
        (project.pk, "received", "", int(H12.timestamp())): 2,
    }
    assert (result.start, result.skipped, result.buckets) == (h07.timestamp() + 3600, 1, 5)


def test_replace_with_default_rollups_touches_no_partly_retained_hour(project: Project) -> None:
    tsdb.incr(project, "received", timestamp=H12 + timedelta(minutes=50), count=1)
    tsdb.incr(project, "received", timestamp=H12, count=10, rollups=[3600])
    [result] = tsdb.backfill([3600], now=NOW, replace=True)
    assert stored(3600)[(project.pk, "received", "", int(H12.timestamp()))] == 11
    assert (result.buckets, result.skipped, result.written) == (0, 1, 0)


def test_projects_and_stats_filters_restrict(project: Project, other_project: Project) -> None:
    for p in (project, other_project):
        for stat in ("received", "rejected"):
            tsdb.incr(p, stat, timestamp=H11, count=3, rollups=[10])
    tsdb.backfill([3600], since=H11, until=NOW, now=NOW, projects=[project], stats=["rejected"])
    assert set(stored(3600)) == {(project.pk, "rejected", "", int(H11.timestamp()))}
    tsdb.backfill([3600], since=H11, until=NOW, now=NOW, projects=[other_project.pk])
    assert {k[:2] for k in stored(3600)} == {
        (project.pk, "rejected"),
        (other_project.pk, "received"),
        (other_project.pk, "rejected"),
    }


@pytest.mark.usefixtures("six_hours_of_10s")
@pytest.mark.parametrize("replace", [False, True])
def test_dry_run_writes_nothing_and_reports_what_would_change(
    project: Project, replace: bool
) -> None:
    tsdb.incr_many(fine_history(project), rollups=[10])
    tsdb.incr(project, "received", timestamp=H11, count=1000, rollups=[3600])
    before = all_rows()
    dry = tsdb.backfill([3600], since=H10, until=NOW, now=NOW, replace=replace, dry_run=True)
    assert all_rows() == before
    real = tsdb.backfill([3600], since=H10, until=NOW, now=NOW, replace=replace)
    assert dry[0].dry_run and not real[0].dry_run
    assert (dry[0].examined, dry[0].written) == (real[0].examined, real[0].written)
    assert real[0].written == len(closed_hours(expected_sums(fine_history(project), 3600))) - (
        0 if replace else 1
    )


def test_one_statement_per_chunk_whatever_the_row_count(project: Project) -> None:
    def writes_for(series: int) -> list[str]:
        EventCount.objects.all().delete()
        projects = [project, *ProjectFactory.create_batch(series - 1)]
        items = [
            (p, "received", H10 + timedelta(seconds=10 * i)) for p in projects for i in range(1080)
        ]
        tsdb.incr_many(items, rollups=[10])
        calls: list[tuple[int, int]] = []
        with CaptureQueriesContext(connection) as ctx:
            tsdb.backfill(
                [3600], since=H10, until=NOW, now=NOW, progress=lambda *a: calls.append(a)
            )
        assert calls == [(1, 3), (2, 3), (3, 3)]
        assert sum(stored(3600).values()) == 1080 * series
        return [q["sql"] for q in ctx.captured_queries if "INSERT" in q["sql"]]

    assert len(writes_for(1)) == len(writes_for(20)) == 3


@pytest.mark.django_db(transaction=True)
def test_each_chunk_commits_on_its_own() -> None:
    project = ProjectFactory()
    for hour in (H10, H11, H12):
        tsdb.incr(project, "received", timestamp=hour, count=2, rollups=[10])

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tsdb.backfill([3600], since=H10, until=NOW, now=NOW, progress=interrupt)
    assert {k[3] for k in stored(3600)} == {int(H10.timestamp()), int(H11.timestamp())}
    tsdb.backfill([3600], since=H10, until=NOW, now=NOW)  # resumes
    assert len(stored(3600)) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rollups": [60]},  # not configured
        {"rollups": [10]},  # the finest: nothing to build it from
        {"rollups": [3600], "source": 86400},  # coarser source
        {"rollups": [3600], "source": 60},  # unconfigured source
        {"stats": ["bogus"]},
        {"since": H12, "until": H11},
        {"since": datetime(2024, 3, 5)},  # noqa: DTZ001 - naive on purpose
        {"until": float("nan")},
        {"now": float("inf")},
        {"projects": [Project(slug="unsaved")]},
    ],
)
def test_bad_input_raises_and_writes_nothing(project: Project, kwargs: dict) -> None:
    tsdb.incr(project, "received", timestamp=H11, count=3, rollups=[10])
    before = all_rows()
    with pytest.raises(ValueError):
        tsdb.backfill(**{"now": NOW, **kwargs})
    assert all_rows() == before


def test_a_source_sum_past_the_largest_bigint_raises_and_writes_nothing(
    project: Project, other_project: Project
) -> None:
    # Two ten-second buckets of one hour whose sum does not fit a bigint; the
    # other project's hour (earlier in the same chunk) must not be written either.
    tsdb.incr(other_project, "received", timestamp=H11, count=3, rollups=[10])
    for minute in (1, 2):
        tsdb.incr(
            project,
            "received",
            timestamp=H11 + timedelta(minutes=minute),
            count=2**62,
            rollups=[10],
        )
    before = all_rows()
    for dry_run in (True, False):
        # (A savepoint: on PostgreSQL the test's transaction outlives the error.)
        with pytest.raises(DataError, match="out of range"), transaction.atomic():
            tsdb.backfill([3600], since=H11, until=H12, now=NOW, dry_run=dry_run)
    assert all_rows() == before


def test_source_must_divide_the_target(settings, project: Project) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"ROLLUPS": ((4, 10), (6, 10), (12, 10))}
    with pytest.raises(ValueError, match="does not divide"):
        tsdb.backfill([6], source=4, now=NOW)
    assert tsdb.backfill([12], source=4, now=NOW)[0].source == 4


def test_a_single_configured_rollup_has_nothing_to_backfill(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"ROLLUPS": ((60, 60),)}
    assert tsdb.backfill(now=NOW) == []


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = 86400


def _from_epoch(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


@settings(max_examples=25)
@given(
    events=st.lists(
        st.tuples(
            st.integers(-DAY, DAY),  # seconds from the epoch, either side
            st.sampled_from(["received", "generated"]),
            st.sampled_from([None, "production"]),
            st.integers(1, 1000),
        ),
        min_size=1,
        max_size=25,
    )
)
# Just before the epoch, where division toward zero picks the bucket after.
@example(events=[(-1, "received", None, 1)])
@example(events=[(-5400, "generated", "production", 2), (-3590, "received", None, 3)])
@example(events=[(-DAY, "received", None, 1), (DAY - 1, "received", None, 1)])
def test_buckets_across_the_epoch_start_on_floor_and_rerun_is_a_no_op(
    project: Project, events: list[tuple[int, str, str | None, int]]
) -> None:
    items = [tsdb.Increment(project, s, _from_epoch(t), c, e) for t, s, e, c in events]
    window = {"since": _from_epoch(-2 * DAY), "until": _from_epoch(2 * DAY)}
    later = _from_epoch(10 * DAY)  # every bucket of the window is closed
    with transaction.atomic():
        tsdb.incr_many(items, rollups=[10])
        tsdb.backfill([3600, 86400], now=later, **window)
        for rollup in (3600, 86400):
            assert stored(rollup) == expected_sums(items, rollup)
        for stat in ("received", "generated"):
            for environment in (None, "production"):
                hours = tsdb.get_range(
                    project,
                    stat,
                    _from_epoch(-2 * DAY),
                    _from_epoch(2 * DAY - 1),
                    rollup=3600,
                    environment=environment,
                    now=later,
                )
                want = expected_sums(items, 3600)
                assert hours == [
                    (b, want.get((project.pk, stat, environment or "", b), 0)) for b, _ in hours
                ]
                assert hours[0][0] == -2 * DAY
        before = all_rows()
        again = tsdb.backfill([3600, 86400], now=later, **window)
        assert [r.written for r in again] == [0, 0]
        assert all_rows() == before
        transaction.set_rollback(True)


def _fine_only(series: int, hours: int) -> list[Project]:
    projects = ProjectFactory.create_batch(series)
    items = [
        (p, "received", H10 + timedelta(seconds=10 * i), 1 + i % 3)
        for p in projects
        for i in range(hours * 360)
    ]
    tsdb.incr_many(items, rollups=[10])
    return projects


def _assert_targets_equal_sources() -> None:
    fine: Counter[tuple[int, int]] = Counter()
    for project_id, timestamp, count in EventCount.objects.filter(rollup=10).values_list(
        "project_id", "timestamp", "count"
    ):
        if timestamp < datetime.fromtimestamp(HOUR, UTC):
            fine[(project_id, bucket_start(timestamp, 3600))] += count
    hourly = {
        (project_id, int(timestamp.timestamp())): count
        for project_id, timestamp, count in EventCount.objects.filter(rollup=3600).values_list(
            "project_id", "timestamp", "count"
        )
    }
    differences = {
        key: (hourly.get(key), fine.get(key))
        for key in hourly.keys() | fine.keys()
        if hourly.get(key) != fine.get(key)
    }
    assert differences == {}  # key: (hourly, sum of 10s)
    assert hourly


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_no_increment_is_lost_while_backfill_runs() -> None:
    # History imported into 10s only, so every hourly bucket is behind its
    # source, while late events keep arriving in those closed hours.
    projects = _fine_only(series=150, hours=3)
    rng = random.Random(7)

    def backfill_under_traffic() -> int:
        stop = threading.Event()
        done: list[int] = []
        errors: list[BaseException] = []

        def traffic() -> None:
            try:
                while not stop.is_set():
                    when = H10 + timedelta(seconds=rng.randrange(3 * 3600))
                    tsdb.incr(rng.choice(projects), "received", timestamp=when)
                    done.append(1)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            while len(done) < 20 and thread.is_alive():
                stop.wait(0.005)
            tsdb.backfill([3600], since=H10, until=NOW, now=NOW)
        finally:
            stop.set()
            thread.join()
        assert not errors
        return len(done)

    for _ in range(3):
        EventCount.objects.filter(rollup=3600).delete()  # behind again
        assert backfill_under_traffic() > 20
        _assert_targets_equal_sources()


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_concurrent_backfills_do_not_add_twice() -> None:
    _fine_only(series=100, hours=2)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            tsdb.backfill([3600], since=H10, until=NOW, now=NOW)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _assert_targets_equal_sources()
