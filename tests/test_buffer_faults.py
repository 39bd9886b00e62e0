"""Processes killed with SIGKILL mid-protocol, several writers and two flushers at once.

PostgreSQL only: the processes share the test database. Each child sets
Django up afresh (spawned) with the buffer settings of the test.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from project_stats import tsdb
from project_stats.models import AppliedBatch, EventCount

from .buffer_workers import (
    flush_loop,
    flush_until_killed,
    ingest_buffered,
    random_session,
    write_until_killed,
)
from .factories import ProjectFactory
from .redis_servers import redis_only_rows
from .test_tsdb_concurrency import expected_rows, stored_rows
from .workers import Sent

pytestmark = [pytest.mark.server_db, pytest.mark.django_db(transaction=True)]

SPAWN = multiprocessing.get_context("spawn")
LEASE = 0.5


def settings_for(buffer: dict[str, Any]) -> dict[str, Any]:
    return {"BUFFER": {**buffer, "LEASE_SECONDS": LEASE}}


def hourly_total(project_id: int, second: int) -> int:
    return sum(c for _, c in tsdb.get_range(project_id, "received", second, second, rollup=3600))


def stored_total(project_id: int) -> int:
    return sum(
        EventCount.objects.filter(project_id=project_id, rollup=3600, environment="").values_list(
            "count", flat=True
        )
    )


@pytest.mark.parametrize("point", ["claimed", "read", "applying", "committed", "acked"])
def test_a_flusher_killed_at_each_step_loses_and_doubles_nothing(
    settings: Any, buffer: dict[str, Any], point: str
) -> None:
    settings.PROJECT_STATS = settings_for(buffer)
    projects = ProjectFactory.create_batch(3)
    second = 1_700_000_000
    tsdb.incr_many([(p, "received", second, 1 + i) for i, p in enumerate(projects)])
    child = SPAWN.Process(
        target=flush_until_killed,
        args=(dict(connection.settings_dict), settings.PROJECT_STATS, point),
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    # Killed mid-flush: reads still exact, and new increments go to the next flush.
    assert [hourly_total(p.pk, second) for p in projects] == [1, 2, 3]
    tsdb.incr_many([(p, "received", second, 10) for p in projects])
    time.sleep(LEASE + 0.1)  # the dead flusher's lease runs out
    tsdb.flush()
    assert [stored_total(p.pk) for p in projects] == [11, 12, 13]
    assert [hourly_total(p.pk, second) for p in projects] == [11, 12, 13]
    assert tsdb.flush().rows == 0


def test_a_writer_killed_mid_batch_leaves_whole_increments(
    settings: Any, buffer: dict[str, Any]
) -> None:
    settings.PROJECT_STATS = settings_for(buffer)
    project_ids = [p.pk for p in ProjectFactory.create_batch(12)]  # every shard
    start = SPAWN.Barrier(2)
    child = SPAWN.Process(
        target=write_until_killed,
        args=(dict(connection.settings_dict), settings.PROJECT_STATS, project_ids, start),
    )
    child.start()
    start.wait(timeout=60)
    time.sleep(1.5)
    child.kill()
    child.join(timeout=30)
    first, last = 1_700_000_000, 1_700_000_000 + 86400
    # A day at 10 s for 12 projects is past the default bound of one read.
    settings.PROJECT_STATS = {**settings.PROJECT_STATS, "MAX_TOTAL_POINTS": 12 * 8641}

    def per_rollup(rollup: int) -> dict[int, int]:
        series = tsdb.get_range_by_project(project_ids, "received", first, last, rollup=rollup)
        return {pk: sum(c for _, c in points) for pk, points in series.items()}

    before = per_rollup(10) if per_rollup(10) else {}
    # Each shard's part of a batch is atomic: both rollups of an increment or neither.
    assert before == per_rollup(3600)
    assert sum(before.values()) > 0
    tsdb.flush()
    assert per_rollup(10) == before == per_rollup(3600)
    assert sum(stored_total(pk) for pk in project_ids) == sum(before.values())


def test_writers_and_two_flushers_at_once_count_exactly(
    settings: Any, buffer: dict[str, Any]
) -> None:
    # The backfill below builds hours from stored 10 s buckets.
    settings.PROJECT_STATS = settings_for({**buffer, "REDIS_ONLY_ROLLUPS": ()})
    projects = ProjectFactory.create_batch(5)
    project_ids = [p.pk for p in projects]
    now = int(time.time())
    recent = [now - 7200 + i * 1237 for i in range(6)]
    closed = [now - 86400 - i * 1201 for i in range(5)]
    database = dict(connection.settings_dict)
    writers_n = 3
    start = SPAWN.Barrier(writers_n + 1)
    results = SPAWN.Queue()
    stop = SPAWN.Event()
    flushers = [
        SPAWN.Process(target=flush_loop, args=(database, settings.PROJECT_STATS, stop))
        for _ in range(2)
    ]
    writers = [
        SPAWN.Process(
            target=ingest_buffered,
            args=(database, settings.PROJECT_STATS, project_ids, seed, 300, recent, closed)
            + (start, results),
        )
        for seed in range(writers_n)
    ]
    for process in flushers + writers:
        process.start()
    try:
        start.wait(timeout=60)
        outcomes = [results.get(timeout=120) for _ in writers]
    finally:
        stop.set()
        for process in writers + flushers:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in flushers] == [0, 0]
    # Items of closed seconds went to the finest rollup alone: the backfill,
    # after a last flush, carries them up.
    since = datetime.fromtimestamp(now - 3 * 86400, UTC).isoformat()
    call_command("project_stats_backfill", "--flush", since=since, verbosity=0)
    assert AppliedBatch.objects.count() > 2  # the flushers took turns during the writes
    sent: Sent = {}
    for outcome in outcomes:
        assert isinstance(outcome, dict), outcome
        for key, count in outcome.items():
            sent[key] = sent.get(key, 0) + count
    assert stored_rows(project_ids) == expected_rows(sent)


def test_processes_reading_their_own_writes_while_others_flush_match_their_models(
    settings: Any, buffer: dict[str, Any]
) -> None:
    settings.PROJECT_STATS = settings_for(buffer)
    processes_n = 3
    projects = [[p.pk for p in ProjectFactory.create_batch(3)] for _ in range(processes_n)]
    start = SPAWN.Barrier(processes_n)
    results = SPAWN.Queue()
    children = [
        SPAWN.Process(
            target=random_session,
            args=(dict(connection.settings_dict), settings.PROJECT_STATS, ids, seed, 150)
            + (start, results),
        )
        for seed, ids in enumerate(projects)
    ]
    for child in children:
        child.start()
    try:
        outcomes = [results.get(timeout=180) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    for outcome in outcomes:
        assert isinstance(outcome, dict), outcome
    tsdb.flush()
    ids = {pk for group in projects for pk in group}
    stored = {
        (pk, rollup, int(ts.timestamp())): count
        for pk, rollup, ts, count in EventCount.objects.filter(
            project_id__in=ids, environment=""
        ).values_list("project_id", "rollup", "timestamp", "count")
    }
    # The rollups kept in Redis only are recorded there.
    for (pk, _, environment, rollup, bucket), count in redis_only_rows(buffer).items():
        if pk in ids and not environment and count:
            stored[(pk, rollup, bucket)] = stored.get((pk, rollup, bucket), 0) + count
    model = {key: count for outcome in outcomes for key, count in outcome.items() if count}
    assert stored == model
