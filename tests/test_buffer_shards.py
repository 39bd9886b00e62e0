"""Flushes claim a few shards at a time, so several flushers share them; shard statistics."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import pytest

from project_stats import tsdb
from project_stats.models import EventCount
from project_stats.tsdb import buffer as buffer_module

from .factories import ProjectFactory
from .test_buffer_promises import redis_client

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600


def test_a_flush_leaves_held_shards_and_applies_the_others_claim_by_claim(
    settings: Any, buffer: dict[str, Any], now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "SHARDS": 8, "CLAIM_SHARDS": 2}}
    projects = ProjectFactory.create_batch(8)
    shards = {p.pk % 8: p for p in projects}
    assert len(shards) == 8
    tsdb.incr_many([(p, "received", now, 1) for p in projects], rollups=[HOUR])
    client = redis_client(buffer)
    held = [0, 1, 2]
    for shard in held:
        client.set(f"{{{buffer['PREFIX']}:{shard}}}:lease", "another", px=60_000)
    points: list[str] = []
    buffer_module.crash_hook = points.append
    result = tsdb.flush()
    assert result.busy == 3 and result.shards == 5
    # Five shards in claims of two: three claims, each its own transaction.
    assert points.count("claimed") == 3 and points.count("applying") == 3
    stored = set(EventCount.objects.values_list("project_id", flat=True))
    assert stored == {p.pk for shard, p in shards.items() if shard not in held}
    for shard in held:
        client.delete(f"{{{buffer['PREFIX']}:{shard}}}:lease")
    tsdb.flush()
    assert set(EventCount.objects.values_list("project_id", flat=True)) == {p.pk for p in projects}


@pytest.mark.server_db  # two connections writing at once
def test_two_flushers_at_once_share_the_shards(
    settings: Any, buffer: dict[str, Any], now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "SHARDS": 16, "CLAIM_SHARDS": 1}}
    projects = ProjectFactory.create_batch(16)
    tsdb.incr_many([(p, "received", now, 3) for p in projects], rollups=[HOUR])
    started = threading.Barrier(2)
    results: list[tsdb.FlushResult] = []

    def flusher() -> None:
        started.wait(timeout=30)
        # Slow each claim's transaction down, so the other flusher meets it.
        buffer_module.crash_hook = lambda point: time.sleep(0.05) if point == "applying" else None
        results.append(tsdb.flush())

    threads = [threading.Thread(target=flusher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    buffer_module.crash_hook = None
    assert sum(r.batches for r in results) == 16
    assert all(r.batches for r in results)  # both flushers applied some
    assert sum(EventCount.objects.values_list("count", flat=True)) == 48


def test_shard_stats_report_what_is_buffered_and_the_last_flush(
    settings: Any, buffer: dict[str, Any], now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "SHARDS": 4}}
    project = ProjectFactory()
    shard = project.pk % 4
    tsdb.incr(project, "received", timestamp=now, rollups=[HOUR, 86400])
    stats = {s.shard: s for s in buffer_module.shard_stats()}
    assert len(stats) == 4
    mine = stats[shard]
    # Two buckets, plus the hash's own id, first write time and incarnation.
    assert mine.fields == 5 and mine.batches == 0
    assert mine.oldest is not None and 0 <= mine.oldest < 60
    assert all(s.fields == 0 and s.oldest is None for n, s in stats.items() if n != shard)
    tsdb.flush()
    after = {s.shard: s for s in buffer_module.shard_stats()}[shard]
    assert after.fields == 0 and after.oldest is None
    assert after.flush_rows == 2 and after.flush_seconds is not None
    assert after.flushed_at is not None and abs(after.flushed_at - time.time()) < 60


def test_flush_command_stats(settings: Any, buffer: dict[str, Any], now: datetime) -> None:
    import io

    from django.core.management import call_command

    settings.PROJECT_STATS = {"BUFFER": {**buffer, "SHARDS": 4}}
    project = ProjectFactory()
    tsdb.incr(project, "received", timestamp=now, rollups=[HOUR])
    out = io.StringIO()
    call_command("project_stats_flush", "--stats", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["shard", "fields", "batches"]
    row = lines[1 + project.pk % 4].split()
    assert row[:3] == [str(project.pk % 4), "4", "0"] and row[3] != "-"
    assert lines[-1].startswith("4 fields buffered in 4 shards")
    assert not EventCount.objects.exists()  # --stats flushes nothing
