"""Rollups kept in Redis only (``BUFFER["REDIS_ONLY_ROLLUPS"]``): never in the
database, read from Redis, expiring there, left alone by prune and backfill."""

from __future__ import annotations

import io
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from project_stats import tsdb
from project_stats.models import EventCount, Project
from project_stats.tsdb import buffer as buffer_module
from project_stats.tsdb import database
from project_stats.tsdb.rollups import bucket_start

from .factories import ProjectFactory
from .redis_servers import buffer_settings, redis_only_rows

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600


@pytest.fixture
def short(settings: Any, buffer: dict[str, Any]) -> dict[str, Any]:
    """The buffer with the default: the 10 s rollup (kept an hour) in Redis only."""
    config = {**buffer, "REDIS_ONLY_ROLLUPS": None}
    settings.PROJECT_STATS = {"BUFFER": config}
    assert buffer_module.redis_only_rollups() == {10: 361 * 10 * 1000}
    return config


def test_short_rollups_never_reach_the_database_and_read_from_redis(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    second = int(now.timestamp())
    tsdb.incr_many(
        [
            (project, "received", second, 3),
            (project, "received", second - 10, 2, "prod"),
            (project, "rejected", second, 1),
        ]
    )
    result = tsdb.flush()
    # Only the hour and the day (total and "prod") reach the database.
    assert set(EventCount.objects.values_list("rollup", flat=True)) == {HOUR, 86400}
    assert result.rows == EventCount.objects.count() == 2 * 2 + 2
    ten = tsdb.get_range(project, "received", second - 20, second, rollup=10)
    assert [count for _, count in ten] == [0, 2, 3]
    prod = tsdb.get_range(project, "received", second - 20, second, rollup=10, environment="prod")
    assert [count for _, count in prod] == [0, 2, 0]
    with CaptureQueriesContext(connection) as ctx:
        tsdb.get_range_by_project([project], "rejected", second - 20, second, rollup=10)
    assert ctx.captured_queries == []  # Redis alone answers
    assert redis_only_rows(short)[(project.pk, 0, "", 10, bucket_start(second, 10))] == 3
    assert tsdb.get_range(project, "received", second, second, rollup=HOUR)[-1][1] == 5


def test_short_buckets_expire_after_their_retention(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now)
    client: Any = (
        redis.RedisCluster.from_url(short["URL"])
        if short["CLUSTER"]
        else redis.Redis.from_url(short["URL"])
    )
    tag = f"{{{short['PREFIX']}:{project.pk % int(short['SHARDS'])}}}"
    group = project.pk // int(short["SHARDS"]) // buffer_module.SHORT_GROUP_PROJECTS
    bucket = f"{tag}:r:10:{bucket_start(now, 10)}:{group}"
    assert 0 < client.pttl(bucket) <= 361 * 10 * 1000
    assert 0 < client.pttl(f"{tag}:r:10") <= 361 * 10 * 1000
    assert client.pttl(f"{tag}:live") == -1  # what the database gets waits for a flush


def test_prune_does_no_database_work_for_short_rollups(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    # A 10 s row from before the rollup moved to Redis: prune leaves it alone.
    database.upsert([(project.pk, 0, "", 10, 0, 7)])
    with CaptureQueriesContext(connection) as ctx:
        removed = tsdb.prune(now=now + timedelta(days=400))
    assert removed[10] == 0
    # One DELETE per stored rollup (the hour and the day), none for 10 s.
    assert sum(q["sql"].startswith("DELETE") for q in ctx.captured_queries) == 2
    assert EventCount.objects.filter(rollup=10).count() == 1


def test_backfill_leaves_short_rollups_out_and_refuses_them_by_name(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    results = tsdb.backfill(now=now)
    assert [r.rollup for r in results] == [86400]  # 1 h has no stored finer rollup
    for kwargs in ({"rollups": [HOUR]}, {"rollups": [86400], "source": 10}, {"rollups": [10]}):
        with pytest.raises(ValueError, match="kept in Redis only"):
            tsdb.backfill(now=now, **kwargs)
    with pytest.raises(CommandError, match="kept in Redis only"):
        call_command("project_stats_backfill", "--rollup", "1h", stdout=io.StringIO())


def test_an_overflowing_short_bucket_refuses_the_whole_call(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2**62, rollups=[10])
    before = redis_only_rows(short)
    with pytest.raises(ValueError, match="2\\*\\*63 - 1"):
        tsdb.incr_many([(project, "received", now, 2**62)])  # the hour fits, 10 s does not
    assert redis_only_rows(short) == before
    tsdb.flush()
    assert not EventCount.objects.exists()


def test_a_wide_short_read_is_bounded_and_exact(
    short: dict[str, Any], settings: Any, now: datetime
) -> None:
    projects = ProjectFactory.create_batch(12)
    second = int(now.timestamp())
    tsdb.incr_many([(p, "received", second - 10 * i, i + 1) for i, p in enumerate(projects)])
    settings.PROJECT_STATS = {"BUFFER": short, "MAX_TOTAL_POINTS": 12 * 361}
    by_project = tsdb.get_range_by_project(projects, "received", second - 3600, second, rollup=10)
    for i, p in enumerate(projects):
        assert sum(c for _, c in by_project[p.pk]) == i + 1
    with pytest.raises(tsdb.QueryError):
        tsdb.get_range_total(
            [*projects, ProjectFactory()], "received", second - 3600, second, rollup=10
        )


def test_delete_forgets_the_projects_short_buckets_too(
    short: dict[str, Any], project: Project, other_project: Project, now: datetime
) -> None:
    second = int(now.timestamp())
    tsdb.incr_many([(project, "received", second, 2), (other_project, "received", second, 5)])
    tsdb.delete([project])
    assert tsdb.get_range(project, "received", second, second, rollup=10)[-1][1] == 0
    assert tsdb.get_range(other_project, "received", second, second, rollup=10)[-1][1] == 5
    assert {key[0] for key in redis_only_rows(short)} == {other_project.pk}


def test_short_buckets_hold_a_group_of_a_shards_projects_each(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    organization = project.organization
    shards = int(short["SHARDS"])
    per_group = buffer_module.SHORT_GROUP_PROJECTS
    # 40 projects of one shard: three groups (the first and last not full).
    base = (10_000_019 // shards) * shards + 3
    projects = [
        ProjectFactory(pk=base + k * shards, organization=organization, slug=f"g{k}")
        for k in range(40)
    ]
    second = int(now.timestamp())
    tsdb.incr_many(
        [
            (p, stat, second, k + 1)
            for k, p in enumerate(projects)
            for stat in ("received", "rejected")
        ]
    )
    by_project = tsdb.get_range_by_project(projects, "rejected", second, second, rollup=10)
    assert [by_project[p.pk][-1][1] for p in projects] == [k + 1 for k in range(40)]
    client: Any = (
        redis.RedisCluster.from_url(short["URL"])
        if short["CLUSTER"]
        else redis.Redis.from_url(short["URL"])
    )
    tag = f"{{{short['PREFIX']}:{base % shards}}}"
    groups = sorted({p.pk // shards // per_group for p in projects})
    assert len(groups) == 3
    keys = [f"{tag}:r:10:{bucket_start(now, 10)}:{group}" for group in groups]
    sizes = [client.hlen(key) for key in keys]
    assert sum(sizes) == 80 and max(sizes) == 2 * per_group
    # A full group is a compact encoding, not a hash table.
    full = keys[sizes.index(2 * per_group)]
    assert client.object("encoding", full) in (b"listpack", b"ziplist")
    # Deleting some projects leaves the others of their groups.
    tsdb.delete(projects[::2])
    after = tsdb.get_range_by_project(projects, "received", second, second, rollup=10)
    assert [after[p.pk][-1][1] for p in projects] == [0 if k % 2 == 0 else k + 1 for k in range(40)]
    assert sum(client.hlen(key) for key in keys) == 40


def test_a_short_read_redis_cannot_answer_raises_even_with_the_database_fallback(
    short: dict[str, Any], settings: Any, project: Project, now: datetime
) -> None:
    second = int(now.timestamp())
    tsdb.incr(project, "received", timestamp=second, count=4)
    tsdb.flush()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.PROJECT_STATS = {
        "BUFFER": {
            **short,
            "URL": f"redis://127.0.0.1:{port}/0",
            "CLUSTER": False,
            "READ_ON_ERROR": "database",
        }
    }
    # The stored rollups answer from the database...
    assert tsdb.get_range(project, "received", second, second, rollup=HOUR)[-1][1] == 4
    # ...but the database holds nothing of a Redis-only one: no made-up zeros.
    with pytest.raises(tsdb.BufferUnavailable):
        tsdb.get_range(project, "received", second - 20, second, rollup=10)


class Rollback(Exception):
    """Raised to roll an outer transaction back."""


def test_a_delete_rolled_back_keeps_the_short_buckets(
    short: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=5)
    with pytest.raises(Rollback), transaction.atomic():
        tsdb.delete([project])
        raise Rollback
    for rollup in (10, HOUR, 86400):
        assert tsdb.get_range(project, "received", now, now, rollup=rollup)[-1][1] == 5, rollup
    tsdb.delete([project])  # committed: gone from Redis too
    assert tsdb.get_range(project, "received", now, now, rollup=10)[-1][1] == 0
    assert redis_only_rows(short) == {}


@pytest.mark.parametrize("ahead", [300, 7200])
def test_a_writer_whose_clock_runs_ahead_hides_no_other_writer_s_buckets(
    short: dict[str, Any], project: Project, monkeypatch: pytest.MonkeyPatch, ahead: int
) -> None:
    second = int(datetime.now(UTC).timestamp()) // 10 * 10
    real = buffer_module.client._now_ms
    # An hour of writes, each when its bucket was current (the writers' clocks right).
    for i in range(360):
        at = second - 10 * i
        monkeypatch.setattr(buffer_module.client, "_now_ms", lambda at=at: at * 1000 + 500)
        tsdb.incr(project, "received", timestamp=at)
    monkeypatch.undo()

    def hour_of_buckets() -> int:
        series = tsdb.get_range(project, "received", second - 3590, second, rollup=10)
        return sum(1 for _, count in series if count)

    assert hour_of_buckets() == 360
    # Another app server, its clock `ahead` seconds fast, writes an event of its "now".
    monkeypatch.setattr(buffer_module.client, "_now_ms", lambda: real() + ahead * 1000)
    tsdb.incr(project, "received", timestamp=second + ahead)
    monkeypatch.undo()
    assert hour_of_buckets() == 360


@pytest.mark.parametrize("redis_server", ["rdb"], indirect=True)
def test_a_batch_over_many_buckets_costs_redis_per_key_not_per_bucket(
    settings: Any, redis_server: Any, now: datetime
) -> None:
    # A batch spread over 300 buckets of 10 s: a hash and an expiry per
    # bucket, but each index (the 10 s rollup's, the live hash's) written
    # once by the write script, not once per bucket.
    config = buffer_settings("single", redis_server.url, SHARDS=1, REDIS_ONLY_ROLLUPS=None)
    settings.PROJECT_STATS = {"BUFFER": config}
    project = ProjectFactory()
    second = int(now.timestamp())
    client = redis_server.client()
    tsdb.incr(project, "received", timestamp=second)  # the script loaded, Redis probed
    client.config_resetstat()
    seconds = [second - 10 * i for i in range(300)]
    tsdb.incr_many([(project, "received", at, 1) for at in seconds])
    used = client.info("commandstats")
    stored = len({at // HOUR for at in seconds}) + len({at // 86400 for at in seconds})
    assert used["cmdstat_evalsha"]["calls"] == 1
    assert used["cmdstat_hincrby"]["calls"] == 300 + stored
    assert used["cmdstat_pexpire"]["calls"] == 300 + 1  # each bucket's hash; the index once
    assert used["cmdstat_zremrangebyscore"]["calls"] == 1
    assert used["cmdstat_zadd"]["calls"] == 2  # the 10 s rollup's index, the live hash's
    series = tsdb.get_range(project, "received", second - 3000, second, rollup=10)
    assert sum(count for _, count in series) == 301
