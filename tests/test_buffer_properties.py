"""Random interleavings of incr, incr_many, flush (some stopped at a crash point)
and reads equal a plain Python model at every read, on one Redis and a cluster.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from project_stats import tsdb
from project_stats.tsdb import buffer as buffer_module

from .factories import ProjectFactory

pytestmark = pytest.mark.django_db

BASE = 1_700_000_000
SPAN = 7200
POINTS = ["claimed", "read", "applying", "committed", "acked"]

item = st.tuples(
    st.integers(0, 2),  # project
    st.integers(0, SPAN - 1),  # second
    st.integers(1, 1000),  # count
    st.sampled_from([None, "prod", "dev"]),
)
operation = st.one_of(
    st.tuples(st.just("incr"), item),
    st.tuples(st.just("incr_many"), st.lists(item, min_size=1, max_size=8)),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("crash"), st.sampled_from(POINTS)),
    st.tuples(
        st.just("read"), st.tuples(st.sampled_from([10, 3600]), st.sampled_from([None, "prod"]))
    ),
)


class Stop(Exception):
    pass


@settings(max_examples=25)
@given(operations=st.lists(operation, min_size=1, max_size=25))
def test_any_interleaving_reads_like_the_model(
    settings: Any, buffer: dict[str, Any], operations: list[tuple[str, Any]]
) -> None:
    # Stopped flushes release their lease here, so no waiting is needed.
    settings.PROJECT_STATS = {"BUFFER": buffer}
    projects = [p.pk for p in ProjectFactory.create_batch(3)]
    model: Counter[tuple[int, int, str, int]] = Counter()

    def record(items: list[tuple[int, int, int, str | None]]) -> None:
        for index, second, count, environment in items:
            for rollup in (10, 3600, 86400):
                bucket = BASE + second - (BASE + second) % rollup
                model[(projects[index], rollup, "", bucket)] += count
                if environment:
                    model[(projects[index], rollup, environment, bucket)] += count

    def check(rollup: int, environment: str | None) -> None:
        got = tsdb.get_range_by_project(
            projects, "received", BASE, BASE + SPAN - 1, rollup=rollup, environment=environment
        )
        for pk, series in got.items():
            for bucket, count in series:
                assert count == model[(pk, rollup, environment or "", bucket)]

    for kind, argument in operations:
        if kind == "incr":
            index, second, count, environment = argument
            tsdb.incr(
                projects[index],
                "received",
                timestamp=BASE + second,
                count=count,
                environment=environment,
            )
            record([argument])
        elif kind == "incr_many":
            tsdb.incr_many([(projects[i], "received", BASE + s, c, e) for i, s, c, e in argument])
            record(argument)
        elif kind == "flush":
            tsdb.flush()
        elif kind == "crash":

            def stop(reached: str, point: str = argument) -> None:
                if reached == point:
                    raise Stop(point)

            buffer_module.crash_hook = stop
            try:
                tsdb.flush()
            except Stop:
                pass
            finally:
                buffer_module.crash_hook = None
        else:
            check(*argument)
        if kind != "read":
            check(3600, None)
    tsdb.flush()
    for pk in projects:
        series = tsdb.get_range(pk, "received", BASE, BASE + SPAN - 1, rollup=3600)
        assert [c for _, c in series] == [model[(pk, 3600, "", b)] for b, _ in series]
