"""Code run in child processes by the buffer fault tests.

Nothing Django is imported at module level (see ``workers.py``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from .workers import ingest, setup_django


def _configure(project_stats: dict[str, Any]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    settings.PROJECT_STATS = project_stats


def flush_until_killed(database: dict[str, Any], project_stats: dict[str, Any], point: str) -> None:
    """Flush, and SIGKILL this process when the protocol reaches ``point``."""
    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb
    from project_stats.tsdb import buffer

    def die(reached: str) -> None:
        if reached == point:
            os.kill(os.getpid(), signal.SIGKILL)

    buffer.crash_hook = die
    tsdb.flush()


def ingest_buffered(database: dict[str, Any], project_stats: dict[str, Any], *args: Any) -> None:
    """``workers.ingest`` with the buffer on."""
    _configure(project_stats)
    ingest(database, *args)


def write_until_killed(
    database: dict[str, Any], project_stats: dict[str, Any], project_ids: list[int], start: Any
) -> None:
    """Batches of increments, one per project and second, until the parent kills us."""
    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb

    start.wait()
    second = 1_700_000_000
    while True:
        tsdb.incr_many([(pk, "received", second, 1) for pk in project_ids], rollups=[10, 3600])
        second += 10


def flush_loop(database: dict[str, Any], project_stats: dict[str, Any], stop: Any) -> None:
    """Flush again and again until ``stop`` is set; then once more."""
    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb

    while not stop.is_set():
        tsdb.flush()
        time.sleep(0.01)
    tsdb.flush()


def random_session(
    database: dict[str, Any],
    project_stats: dict[str, Any],
    project_ids: list[int],
    seed: int,
    operations: int,
    start: Any,
    results: Any,
) -> None:
    """Random incr, incr_many, flush and reads of ``project_ids``, which only this
    process writes (other processes flush them meanwhile). Every read must equal
    this process's model; puts the model (or the first mismatch) in ``results``.
    """
    import random

    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb

    base, span = 1_700_000_000, 7200
    rng = random.Random(seed)
    model: dict[tuple[int, int, int], int] = {}

    def record(items: list[tuple[int, str, int, int]]) -> None:
        for pk, _, second, count in items:
            for rollup in (10, 3600, 86400):
                key = (pk, rollup, second - second % rollup)
                model[key] = model.get(key, 0) + count

    try:
        start.wait()
        for _ in range(operations):
            choice = rng.random()
            if choice < 0.3:
                item = (rng.choice(project_ids), "received", base + rng.randrange(span), 1)
                tsdb.incr(item[0], "received", timestamp=item[2], count=item[3])
                record([item])
            elif choice < 0.6:
                items = [
                    (
                        rng.choice(project_ids),
                        "received",
                        base + rng.randrange(span),
                        rng.randint(1, 9),
                    )
                    for _ in range(rng.randint(1, 10))
                ]
                tsdb.incr_many(items)
                record(items)
            elif choice < 0.7:
                tsdb.flush()
            else:
                rollup = rng.choice([10, 3600])
                got = tsdb.get_range_by_project(
                    project_ids, "received", base, base + span - 1, rollup=rollup
                )
                for pk, series in got.items():
                    for bucket, count in series:
                        expected = model.get((pk, rollup, bucket), 0)
                        if count != expected:
                            results.put(
                                f"project {pk} bucket {bucket}: read {count}, model {expected}"
                            )
                            return
        results.put(model)
    except BaseException as error:
        results.put(repr(error))
        raise
