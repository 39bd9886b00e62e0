"""``tsdb`` against a plain Python model of the same increments, on every rollup.

Random times (recent, or anywhere a ``datetime`` reaches), counts and
environments go in through ``incr`` and ``incr_many``; every rollup's
``get_range`` (and the summed and per-project reads) must equal what the
model computes from the increments alone, bucket by bucket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from django.db import transaction
from hypothesis import example, given, settings
from hypothesis import strategies as st

from project_stats import tsdb
from project_stats.models import Project

from .conftest import NOW

pytestmark = pytest.mark.django_db

ROLLUPS = (10, 3600, 86400)
STATS = ("received", "generated")
ENVIRONMENTS = (None, "production", "staging", "prod\u00fcction")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(seconds=1)
LAST = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(seconds=1)
# Increments spread over at most this long: a few thousand ten-second points,
# several hours, sometimes two days.
SPREAD = 6 * 3600


class Item(NamedTuple):
    project: int  # index into the test's projects
    stat: str
    micros: int  # offset from the base time
    count: int
    environment: str | None


items = st.builds(
    Item,
    project=st.integers(0, 1),
    stat=st.sampled_from(STATS),
    micros=st.integers(0, SPREAD * 1_000_000),
    count=st.one_of(st.integers(0, 5), st.integers(0, 2**40)),
    environment=st.sampled_from(ENVIRONMENTS),
)
bases = st.one_of(
    st.just(int(NOW.timestamp())),
    st.integers(int(NOW.timestamp()) - 86400 * 365, int(NOW.timestamp())),
    # Anywhere a datetime reaches, its edges included.
    st.integers(FIRST, LAST - SPREAD - 1),
)


class Model:
    """Counts per (project, stat, environment, rollup, bucket start), from the increments."""

    def __init__(self, base: int, increments: list[Item]) -> None:
        self.times = [base * 1_000_000 + item.micros for item in increments]
        self.buckets: Counter[tuple[int, str, str, int, int]] = Counter()
        for item, micros in zip(increments, self.times, strict=True):
            second = micros // 1_000_000
            for rollup in ROLLUPS:
                bucket = second - second % rollup
                self.buckets[(item.project, item.stat, "", rollup, bucket)] += item.count
                if item.environment:
                    key = (item.project, item.stat, item.environment, rollup, bucket)
                    self.buckets[key] += item.count

    def series(
        self, project: int, stat: str, environment: str, rollup: int, start: int, end: int
    ) -> list[tuple[int, int]]:
        """Sentry's series for ``[start, end]`` in whole seconds: back from ``end`` to ``start``."""
        points = (end - start) // rollup + 1
        last = end - end % rollup
        return [
            (b, self.buckets[(project, stat, environment, rollup, b)])
            for b in (last - rollup * i for i in reversed(range(points)))
        ]


def at(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


@pytest.fixture
def projects(project: Project, other_project: Project) -> list[Project]:
    return [project, other_project]


@contextmanager
def rolled_back() -> Iterator[None]:
    """Each example starts from the test's data: its writes are undone after it."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@settings(max_examples=30)
@given(
    base=bases,
    increments=st.lists(items, min_size=1, max_size=30),
    batches=st.integers(1, 3),
    reads=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=1),
)
@example(base=FIRST, increments=[Item(0, "generated", 0, 1, "staging")], batches=1, reads=[(0, 1)])
@example(
    base=LAST - SPREAD - 1,
    increments=[Item(1, "received", SPREAD * 1_000_000, 2**40, None)],
    batches=1,
    reads=[(0, 1)],
)
@example(  # more rows than one SQLite statement takes
    base=int(NOW.timestamp()),
    increments=[
        Item(i % 2, STATS[i // 2 % 2], i * 239_000_000, i + 1, ENVIRONMENTS[i % 4])
        for i in range(90)
    ],
    batches=1,
    reads=[(0.25, 0.5)],
)
def test_every_rollup_reads_back_what_a_plain_model_counts(
    projects: list[Project],
    base: int,
    increments: list[Item],
    batches: int,
    reads: list[tuple[float, float]],
) -> None:
    model = Model(base, increments)
    with rolled_back():
        # The first item alone through incr; the rest in batches through incr_many.
        first = increments[0]
        tsdb.incr(
            projects[first.project],
            first.stat,
            count=first.count,
            timestamp=EPOCH + timedelta(microseconds=model.times[0]),
            environment=first.environment,
        )
        rest = list(zip(increments[1:], model.times[1:], strict=True))
        for i in range(batches):
            tsdb.incr_many(
                tsdb.Increment(
                    projects[item.project],
                    item.stat,
                    EPOCH + timedelta(microseconds=micros),
                    item.count,
                    item.environment,
                )
                for item, micros in rest[i::batches]
            )

        lowest, highest = min(model.times) // 1_000_000, max(model.times) // 1_000_000
        environments = ["", *sorted({i.environment for i in increments if i.environment})]
        for rollup in ROLLUPS:
            # Every increment, from the start of its bucket; and windows around them.
            windows = [(lowest - lowest % rollup, highest)]
            for a, b in reads:
                margin = 3 * rollup
                width = highest - lowest + 2 * margin
                start = lowest - margin + int(min(a, b) * width)
                end = lowest - margin + int(max(a, b) * width)
                windows.append((min(max(start, FIRST), LAST), min(max(end, FIRST), LAST)))
            for start, end in windows:
                for stat in STATS:
                    for environment in environments:
                        expected = [
                            model.series(p, stat, environment, rollup, start, end) for p in (0, 1)
                        ]
                        read = {"rollup": rollup, "environment": environment or None}
                        one = tsdb.get_range(projects[0], stat, at(start), at(end), **read)
                        assert one == expected[0]
                        assert tsdb.get_range_by_project(
                            projects, stat, at(start), at(end), **read
                        ) == {projects[p].pk: expected[p] for p in (0, 1)}
                        summed = tsdb.get_range_total(projects, stat, at(start), at(end), **read)
                        assert summed == [
                            (t, x + y)
                            for (t, x), (_, y) in zip(expected[0], expected[1], strict=True)
                        ]
            # The totals: every increment lands once in every rollup.
            for p in (0, 1):
                total = sum(i.count for i in increments if i.project == p)
                start = lowest - lowest % rollup
                series = [
                    tsdb.get_range(projects[p], stat, at(start), at(highest), rollup=rollup)
                    for stat in STATS
                ]
                assert sum(c for s in series for _, c in s) == total
