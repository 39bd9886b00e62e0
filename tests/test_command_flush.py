"""``project_stats_flush`` when the database fails: a message, or a retry with ``--loop``.

The failure is real: the applied batches' table is renamed away while the
command runs, so the flush's transaction fails on the database.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from project_stats import tsdb
from project_stats.models import AppliedBatch, EventCount, Project
from project_stats.tsdb import buffer as buffer_module

TABLE = AppliedBatch._meta.db_table
AWAY = f"{TABLE}_away"


def rename(old: str, new: str) -> None:
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {qn(old)} RENAME TO {qn(new)}")


@contextmanager
def applied_batches_missing() -> Iterator[None]:
    """The applied batches' table is gone until the block ends (or ``restore()``)."""
    rename(TABLE, AWAY)
    try:
        yield
    finally:
        restore()


def restore() -> None:
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    if AWAY in tables:
        rename(AWAY, TABLE)


def stored(project: Project) -> int:
    return sum(
        EventCount.objects.filter(project=project, rollup=3600, environment="").values_list(
            "count", flat=True
        )
    )


# Transactional: MariaDB commits the rename, and with it anything the test wrote.
@pytest.mark.django_db(transaction=True)
def test_a_database_error_is_a_command_error_and_loses_nothing(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=3)
    with applied_batches_missing(), pytest.raises(CommandError) as raised:
        call_command("project_stats_flush", stdout=io.StringIO())
    message = str(raised.value)
    assert message.startswith("The flush failed in the database")
    assert TABLE in message  # the database's own words say what failed
    assert "Redis keeps the claimed increments" in message
    assert stored(project) == 0
    call_command("project_stats_flush", stdout=io.StringIO())
    assert stored(project) == 3


class _Restorer(logging.Handler):
    """Restores the table at the loop's first failure, stops the loop once it has flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []
        self.flushes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Flush failed"):
            self.failures.append(text)
            restore()  # runs in the loop's own thread, between two flushes
        elif text.startswith("Flushed") and self.failures:
            self.flushes.append(text)
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.django_db(transaction=True)
def test_the_loop_logs_a_database_error_and_retries(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=4)
    handler = _Restorer()
    logger = logging.getLogger("project_stats.flush")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    # Only a safety net: the handler stops the loop long before this.
    timer = threading.Timer(120.0, os.kill, (os.getpid(), signal.SIGTERM))
    out, err = io.StringIO(), io.StringIO()
    try:
        with applied_batches_missing():
            timer.start()
            call_command(
                "project_stats_flush", "--loop", "--interval", "0.05", stdout=out, stderr=err
            )
    finally:
        timer.cancel()
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    assert len(handler.failures) == 1 and TABLE in handler.failures[0]
    assert handler.failures[0] in err.getvalue()
    # One row per rollup the database keeps (the others live in Redis only).
    rows = len([r for r, _ in tsdb.get_rollups() if r not in buffer_module.redis_only_rollups()])
    assert handler.flushes and handler.flushes[0].startswith(f"Flushed {rows} rows from 1 batches")
    assert out.getvalue().rstrip().endswith("Stopped.")
    assert stored(project) == 4
