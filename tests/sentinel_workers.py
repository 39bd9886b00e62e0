"""Code run in child processes by the Sentinel failover test.

Nothing Django is imported at module level (see ``workers.py``).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from .buffer_workers import _configure
from .chaos_workers import Series, _add
from .workers import setup_django

Item = tuple[int, str, int, int, str | None]


def write(
    database: dict[str, Any],
    project_stats: dict[str, Any],
    project_ids: list[int],
    seconds: list[int],
    seed: int,
    stop: Any,
    results: Any,
) -> None:
    """``incr_many`` until ``stop``; puts in ``results`` every call that returned
    with when it began and returned (``time.monotonic()``, one clock for
    every process), what the calls that raised tried to write (uncertain),
    and call counts."""
    _configure(project_stats)
    setup_django(database)
    from project_stats import tsdb

    rng = random.Random(seed)
    acknowledged: list[tuple[float, float, list[Item]]] = []
    uncertain: Counter[Series] = Counter()
    calls: Counter[str] = Counter()
    try:
        while not stop.is_set():
            items: list[Item] = [
                (
                    rng.choice(project_ids),
                    "received",
                    rng.choice(seconds),
                    rng.randint(1, 5),
                    "production" if rng.random() < 0.3 else None,
                )
                for _ in range(rng.randint(1, 20))
            ]
            began = time.monotonic()
            try:
                tsdb.incr_many(items)
            except tsdb.BufferUnavailable:
                _add(uncertain, items)
                calls["uncertain"] += 1
                time.sleep(0.05)
                continue
            except Exception as error:
                # Not the documented failure (a 500 in a view): still uncertain, and reported.
                _add(uncertain, items)
                calls[f"unexpected {type(error).__name__}"] += 1
                time.sleep(0.05)
                continue
            acknowledged.append((began, time.monotonic(), items))
            calls["acknowledged"] += 1
            time.sleep(0.005)
        results.put((acknowledged, uncertain, calls))
    except BaseException as error:
        results.put(repr(error))
        raise
