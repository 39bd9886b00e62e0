"""Many processes incrementing the same buckets while the backfill command runs.

Each process has its own connection (spawned, Django set up afresh against
the test database); the final counts of every rollup must equal the sum of
what was sent, whatever the interleaving.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection

from project_stats import tsdb
from project_stats.constants import STAT_NAMES
from project_stats.models import EventCount

from .factories import ProjectFactory
from .workers import Sent, ingest

PROCESSES = 4
OPERATIONS = 400


def expected_rows(sent: Sent) -> Counter[tuple[int, str, str, int, int]]:
    rows: Counter[tuple[int, str, str, int, int]] = Counter()
    for (project_id, stat, environment, second), count in sent.items():
        for rollup, _ in tsdb.get_rollups():
            bucket = second - second % rollup
            rows[(project_id, stat, "", rollup, bucket)] += count
            if environment:
                rows[(project_id, stat, environment, rollup, bucket)] += count
    return rows


def stored_rows(project_ids: list[int]) -> Counter[tuple[int, str, str, int, int]]:
    rows: Counter[tuple[int, str, str, int, int]] = Counter()
    for project_id, stat, environment, rollup, timestamp, count in EventCount.objects.filter(
        project_id__in=project_ids, count__gt=0
    ).values_list("project_id", "stat", "environment", "rollup", "timestamp", "count"):
        rows[(project_id, STAT_NAMES[stat], environment, rollup, int(timestamp.timestamp()))] = (
            count
        )
    return rows


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_processes_incrementing_during_backfills_lose_and_double_nothing() -> None:
    projects = ProjectFactory.create_batch(2)
    project_ids = [p.pk for p in projects]
    now = int(time.time())
    today = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    # A few seconds each: every process hits the same buckets. The closed ones
    # lie in two hours of yesterday, which the backfill keeps rebuilding.
    recent = [now - 7200 + i * 1237 for i in range(6)]
    hour = today - 86400 + 5 * 3600
    closed = [hour + i * 1201 for i in range(5)]
    since = datetime.fromtimestamp(today - 2 * 86400, UTC).isoformat()
    hot = {
        "rollups": ["1h"],
        "since": datetime.fromtimestamp(hour, UTC).isoformat(),
        "until": datetime.fromtimestamp(hour + 7200, UTC).isoformat(),
    }

    database = dict(connection.settings_dict)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=ingest,
            args=(database, project_ids, seed, OPERATIONS, recent, closed, start, results),
        )
        for seed in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(timeout=60)  # every process is set up: go
        backfills = 0
        while any(process.is_alive() for process in processes) and backfills < 10_000:
            # Mostly the contended hours, now and then everything.
            options = hot if backfills % 5 else {"since": since}
            call_command("project_stats_backfill", verbosity=0, **options)
            backfills += 1
        outcomes = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    # Once more with the writers gone: what was written to the finest rollup
    # alone since the last run reaches the coarser ones.
    call_command("project_stats_backfill", since=since, verbosity=0)

    sent: Sent = {}
    for outcome in outcomes:
        assert isinstance(outcome, dict), outcome
        for key, count in outcome.items():
            sent[key] = sent.get(key, 0) + count
    assert backfills >= 2  # the backfill really ran alongside the writers
    assert sum(sent.values()) > PROCESSES * OPERATIONS
    assert stored_rows(project_ids) == expected_rows(sent)
