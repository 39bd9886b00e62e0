from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from project_stats import tsdb
from project_stats.models import EventCount, Project
from project_stats.tsdb.rollups import bucket_start, epoch_to_datetime

from .conftest import NOW

pytestmark = pytest.mark.django_db

# At NOW (13:37:42.5) the retention edges are 12:37:42.5 for 10s (360 kept),
# 2024-02-27 13:37:42.5 for 1h (168) and 2023-12-06 13:37:42.5 for 1d (90).
EDGES = {
    10: NOW - timedelta(hours=1),
    3600: NOW - timedelta(hours=168),
    86400: NOW - timedelta(days=90),
}


def bucket_times(rollup: int) -> list[int]:
    return sorted(
        int(t.timestamp())
        for t in EventCount.objects.filter(rollup=rollup).values_list("timestamp", flat=True)
    )


@pytest.fixture
def around_the_edges(project: Project) -> dict[int, tuple[int, int]]:
    """Per rollup: the last expired and the first retained bucket start, both stored."""
    edges = {}
    for rollup, edge in EDGES.items():
        expired = bucket_start(edge, rollup)  # starts before the edge
        kept = expired + rollup
        for start in (expired - 5 * rollup, expired, kept, kept + 3 * rollup):
            tsdb.incr(project, "received", timestamp=start, rollups=[rollup])
        edges[rollup] = (expired, kept)
    tsdb.incr(project, "received", timestamp=NOW)  # current buckets of every rollup
    return edges


def test_prune_keeps_everything_inside_retention_and_nothing_outside(
    around_the_edges: dict[int, tuple[int, int]],
) -> None:
    removed = tsdb.prune(now=NOW)
    assert removed == {10: 2, 3600: 2, 86400: 2}
    for rollup, (expired, kept) in around_the_edges.items():
        assert bucket_times(rollup) == [kept, kept + 3 * rollup, bucket_start(NOW, rollup)]
        assert epoch_to_datetime(kept) >= EDGES[rollup] > epoch_to_datetime(expired)
    assert tsdb.prune(now=NOW) == {10: 0, 3600: 0, 86400: 0}


def test_dry_run_counts_and_deletes_nothing(around_the_edges: dict[int, tuple[int, int]]) -> None:
    before = EventCount.objects.count()
    assert tsdb.prune(now=NOW, dry_run=True) == {10: 2, 3600: 2, 86400: 2}
    assert EventCount.objects.count() == before


def test_deletes_in_bounded_batches(project: Project) -> None:
    old = NOW - timedelta(hours=3)
    tsdb.incr_many(
        [(project, "received", old - timedelta(seconds=10 * i)) for i in range(5)], rollups=[10]
    )
    with CaptureQueriesContext(connection) as ctx:
        assert tsdb.prune(now=NOW, batch_size=2) == {10: 5, 3600: 0, 86400: 0}
    deletes = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3 + 1 + 1  # 2 + 2 + 1 rows of 10s, then one empty batch per rollup
    assert all("LIMIT" in sql for sql in deletes)
    assert not EventCount.objects.filter(rollup=10).exists()


def test_reads_at_the_edge_answer_zeros_for_pruned_buckets(project: Project) -> None:
    start = NOW - timedelta(hours=1)
    for offset in (0, 10, 20, 1800):
        tsdb.incr(project, "received", timestamp=start + timedelta(seconds=offset), count=2)
    before = tsdb.get_range(project, "received", start, NOW, rollup=10)
    tsdb.prune(now=NOW)
    after = tsdb.get_range(project, "received", start, NOW, rollup=10)
    assert len(after) == len(before) == 361
    # The first bucket (12:37:40) started before the edge and is gone.
    assert before[:3] == [
        (bucket_start(start, 10), 2),
        (bucket_start(start, 10) + 10, 2),
        (bucket_start(start, 10) + 20, 2),
    ]
    assert after[:3] == [(bucket_start(start, 10), 0), *before[1:3]]
    assert sum(c for _, c in after) == sum(c for _, c in before) - 2


def test_rows_of_rollups_no_longer_configured_are_left_alone(settings, project: Project) -> None:  # type: ignore[no-untyped-def]
    tsdb.incr(project, "received", timestamp=datetime(2020, 1, 1, tzinfo=UTC))
    settings.PROJECT_STATS = {"ROLLUPS": ((10, 360), (3600, 168))}
    assert tsdb.prune(now=NOW) == {10: 1, 3600: 1}
    assert bucket_times(86400) == [int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": True}, {"now": float("nan")}])
def test_bad_input_raises_and_deletes_nothing(project: Project, kwargs: dict) -> None:
    tsdb.incr(project, "received", timestamp=NOW - timedelta(days=400))
    with pytest.raises(ValueError):
        tsdb.prune(**kwargs)
    assert EventCount.objects.count() == 3
