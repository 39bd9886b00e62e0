"""Code run in child processes by the buffer chaos test.

Nothing Django is imported at module level (see ``workers.py``). Flushers are
killed with SIGKILL at any moment, so they report through shared counters of
their own, never through a queue a kill could leave half-written.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from typing import Any

from .buffer_workers import _configure
from .workers import setup_django

Series = tuple[int, str, int, int]
"""``(project_id, environment or "", rollup, bucket start)``."""

ROLLUPS = (10, 3600, 86400)

# Slots of a flusher's shared counters.
FLUSHES, FLUSH_UNAVAILABLE, FLUSH_ERRORS = 0, 1, 2


def _add(ledger: Counter[Series], items: list[tuple[int, str, int, int, str | None]]) -> None:
    for project_id, _, second, count, environment in items:
        for rollup in ROLLUPS:
            bucket = second - second % rollup
            ledger[(project_id, "", rollup, bucket)] += count
            if environment:
                ledger[(project_id, environment, rollup, bucket)] += count


def write(
    database: dict[str, Any],
    project_stats: dict[str, Any],
    project_ids: list[int],
    seconds: list[int],
    seed: int,
    stop: Any,
    results: Any,
) -> None:
    """``incr`` and ``incr_many`` until ``stop``; puts its ledger in ``results``:
    what calls that returned wrote (acknowledged), what calls that raised
    tried to write (uncertain: Redis may or may not have it), and call counts.
    """
    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb

    rng = random.Random(seed)
    acknowledged: Counter[Series] = Counter()
    uncertain: Counter[Series] = Counter()
    calls: Counter[str] = Counter()

    made = 0

    def item() -> tuple[int, str, int, int, str | None]:
        environment = "production" if rng.random() < 0.3 else None
        count = rng.randint(1, 5)
        # The seconds written move on every few calls, so the uncertain calls of
        # an outage share few buckets with the rest.
        second = seconds[(seed * 7 + made // 8 + rng.randrange(3)) % len(seconds)]
        return (rng.choice(project_ids), "received", second, count, environment)

    try:
        while not stop.is_set():
            made += 1
            size = 1 if rng.random() < 0.4 else rng.randint(2, 30)
            items = [item() for _ in range(size)]
            try:
                if len(items) == 1:
                    project_id, stat, second, count, environment = items[0]
                    tsdb.incr(
                        project_id, stat, count=count, timestamp=second, environment=environment
                    )
                else:
                    tsdb.incr_many(items)
            except tsdb.BufferUnavailable:
                _add(uncertain, items)
                calls["uncertain"] += 1
                time.sleep(0.05)
                continue
            except Exception as error:
                # Not the documented failure: still uncertain, and reported.
                _add(uncertain, items)
                calls["uncertain"] += 1
                calls[f"unexpected {type(error).__name__}"] += 1
                time.sleep(0.05)
                continue
            _add(acknowledged, items)
            calls["acknowledged"] += 1
            time.sleep(0.005)
        results.put((acknowledged, uncertain, calls))
    except BaseException as error:
        results.put(repr(error))
        raise


def flush(database: dict[str, Any], project_stats: dict[str, Any], counters: Any) -> None:
    """``tsdb.flush()`` again and again until killed; counts into ``counters``."""
    _configure(project_stats)
    setup_django(database)
    from django.db import connection

    from project_stats import tsdb

    while True:
        try:
            tsdb.flush()
            counters[FLUSHES] += 1
        except tsdb.BufferUnavailable:
            counters[FLUSH_UNAVAILABLE] += 1
            time.sleep(0.1)
        except Exception as error:
            counters[FLUSH_ERRORS] += 1
            print(f"flusher: {type(error).__name__}: {error}", file=sys.stderr)
            connection.close()
            time.sleep(0.1)
        time.sleep(0.02)


def read(
    database: dict[str, Any],
    project_stats: dict[str, Any],
    project_ids: list[int],
    first: int,
    last: int,
    stop: Any,
    results: Any,
) -> None:
    """Read every series (all environments, each rollup) until ``stop``; puts
    the highest value seen per series, the reads where one went down, and counts."""
    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb

    highest: dict[Series, int] = {}
    went_down: list[str] = []
    calls: Counter[str] = Counter()
    try:
        while not stop.is_set():
            for rollup in ROLLUPS:
                try:
                    got = tsdb.get_range_by_project(
                        project_ids, "received", first, last, rollup=rollup
                    )
                except tsdb.BufferUnavailable:
                    calls["unavailable"] += 1
                    time.sleep(0.05)
                    continue
                except Exception as error:
                    calls[f"unexpected {type(error).__name__}"] += 1
                    time.sleep(0.05)
                    continue
                calls["reads"] += 1
                for project_id, points in got.items():
                    for bucket, count in points:
                        key = (project_id, "", rollup, bucket)
                        before = highest.get(key, 0)
                        if count < before and len(went_down) < 50:
                            went_down.append(
                                f"project {project_id} rollup {rollup} bucket {bucket}: "
                                f"read {count} after {before}"
                            )
                        highest[key] = max(before, count)
            time.sleep(0.02)
        results.put((highest, went_down, calls))
    except BaseException as error:
        results.put(repr(error))
        raise
