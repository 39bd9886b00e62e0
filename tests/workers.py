"""Code run in child processes by the concurrency tests.

Nothing Django is imported at module level: a spawned child imports this
module to find its target before Django is set up.
"""

from __future__ import annotations

import os
import random
from typing import Any

Sent = dict[tuple[int, str, str, int], int]
"""Counts sent per ``(project_id, stat, environment or "", epoch second)``."""


def setup_django(database: dict[str, Any]) -> None:
    """Set Django up in this process against ``database`` (a ``settings_dict``)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django
    from django.conf import settings

    settings.DATABASES = {"default": database}
    django.setup()


def ingest(
    database: dict[str, Any],
    project_ids: list[int],
    seed: int,
    operations: int,
    recent: list[int],
    closed: list[int],
    start: Any,
    results: Any,
) -> None:
    """``incr`` and ``incr_many`` calls on the same few buckets; puts what was sent in ``results``.

    ``recent`` seconds are written to every rollup; ``closed`` seconds (in
    closed days) sometimes to the finest rollup alone, for the backfill to
    carry up. Work begins when every party has reached the ``start`` barrier.
    """
    setup_django(database)
    from django.db import connection

    from project_stats import tsdb

    rng = random.Random(seed)
    finest = tsdb.get_rollups()[0][0]
    sent: Sent = {}

    def item(seconds: list[int]) -> tuple[int, str, int, int, str | None]:
        stat = rng.choice(["received", "generated"])
        environment = rng.choice([None, "production"]) if stat == "generated" else None
        return (rng.choice(project_ids), stat, rng.choice(seconds), rng.randint(1, 5), environment)

    try:
        start.wait()
        for _ in range(operations):
            mode = rng.random()
            if mode < 0.25:
                project_id, stat, second, count, environment = item(recent + closed)
                tsdb.incr(project_id, stat, count=count, timestamp=second, environment=environment)
                items = [(project_id, stat, second, count, environment)]
            elif mode < 0.55:
                items = [item(closed) for _ in range(rng.randint(1, 20))]
                tsdb.incr_many(items, rollups=[finest])
            else:
                items = [item(recent + closed) for _ in range(rng.randint(1, 20))]
                tsdb.incr_many(items)
            for project_id, stat, second, count, environment in items:
                key = (project_id, stat, environment or "", second)
                sent[key] = sent.get(key, 0) + count
        results.put(sent)
    except BaseException as error:
        results.put(error)
        raise
    finally:
        connection.close()
