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
