"""The write buffer's promises under what deployments do to it, on real servers.

A flush inside a transaction that rolls back, a bucket pushed past 2**63 - 1,
``delete`` while another flusher holds the shard, a read of many projects'
series, and transactions of bounded size.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.db import connections, transaction
from django.test import Client
from django.urls import reverse

from project_stats import tsdb
from project_stats.constants import stat_code
from project_stats.models import ApiToken, EventCount, Project
from project_stats.tsdb import buffer as buffer_module
from project_stats.tsdb.rollups import bucket_start
from project_stats.usage import READ_STATS

from .conftest import bearer
from .factories import ApiTokenFactory, OrganizationMemberFactory, ProjectFactory
from .redis_servers import buffer_settings, log_every_command, logged_scripts

HOUR = 3600
MAX = 2**63 - 1


class Rollback(Exception):
    """Raised to roll an outer transaction back."""


def hourly(project: Project | int, now: datetime) -> int:
    return tsdb.get_range(project, "received", now, now, rollup=HOUR)[-1][1]


def stored(project: Project | int, rollup: int = HOUR, stat: str = "received") -> int:
    return sum(
        EventCount.objects.filter(
            project=project, stat=stat_code(stat), rollup=rollup, environment=""
        ).values_list("count", flat=True)
    )


def redis_client(config: dict[str, Any]) -> Any:
    if config["CLUSTER"]:
        return redis.RedisCluster.from_url(config["URL"])
    return redis.Redis.from_url(config["URL"])


def shard_of(config: dict[str, Any], project: Project) -> int:
    return int(project.pk) % int(config["SHARDS"])


def project_on_another_shard(config: dict[str, Any], project: Project) -> Project:
    while True:
        other = ProjectFactory(organization=project.organization)
        if shard_of(config, other) != shard_of(config, project):
            return other


# -- acknowledged only once committed ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_flush_rolled_back_with_its_transaction_loses_nothing(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=5)
    with pytest.raises(Rollback), transaction.atomic():
        assert tsdb.flush().batches == 1
        assert stored(project) == 5 and hourly(project, now) == 5
        raise Rollback
    assert stored(project) == 0
    assert hourly(project, now) == 5  # still buffered
    tsdb.flush()
    assert stored(project) == 5 and hourly(project, now) == 5
    assert tsdb.flush().rows == 0


@pytest.mark.django_db(transaction=True)
def test_delete_rolled_back_with_its_transaction_loses_nothing(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)
    tsdb.flush()
    tsdb.incr(project, "received", timestamp=now, count=3)
    with pytest.raises(Rollback), transaction.atomic():
        tsdb.delete([project])
        assert hourly(project, now) == 0
        raise Rollback
    assert hourly(project, now) == 5
    tsdb.flush()
    assert stored(project) == 5


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_other_connections_read_the_counts_while_a_flush_awaits_its_commit(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=7)
    seen: list[int] = []

    def read_elsewhere() -> None:
        try:
            seen.append(hourly(project.pk, now))
        finally:
            connections.close_all()

    with transaction.atomic():
        tsdb.flush()
        reader = threading.Thread(target=read_elsewhere)
        reader.start()
        reader.join(timeout=60)
    assert seen == [7]
    assert hourly(project, now) == 7 and stored(project) == 7


# -- counts past 2**63 - 1 -----------------------------------------------------


@pytest.mark.parametrize("on_error", ["raise", "database"])
def test_a_write_that_would_overflow_records_nothing(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime, on_error: str
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "ON_ERROR": on_error}}
    other = project_on_another_shard(buffer, project)
    tsdb.incr(project, "received", timestamp=now, count=2**62, rollups=[HOUR])
    with pytest.raises(ValueError, match="2\\*\\*63 - 1"):
        # The 10 s bucket is new and fits, the hourly one does not: neither
        # may stay, nor the other project's increment on its own shard.
        tsdb.incr_many(
            [(project, "received", now, 2**62), (other, "received", now, 1)],
            rollups=[10, HOUR],
        )
    assert hourly(project, now) == 2**62
    assert tsdb.get_range(project, "received", now, now, rollup=10) == [
        (int(now.timestamp()) // 10 * 10, 0)
    ]
    assert hourly(other, now) == 0
    assert not EventCount.objects.exists()
    tsdb.flush()
    assert stored(project) == 2**62 and stored(other) == 0
    assert stored(project, rollup=10) == 0


def test_the_undo_of_an_overflowing_write_leaves_the_hash_as_it_was(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2**62, rollups=[HOUR])
    live = f"{{{buffer['PREFIX']}:{shard_of(buffer, project)}}}:live"
    client = redis_client(buffer)
    before = client.hgetall(live)
    with pytest.raises(ValueError):
        tsdb.incr_many(
            [(project, "received", now, 1), (project, "received", now, 2**62, "prod")],
            rollups=[10, HOUR],
        )
    assert client.hgetall(live) == before
    assert not tsdb.environment_exists(project.organization, "prod")


@pytest.mark.django_db(transaction=True)
def test_a_bucket_flushed_past_the_maximum_is_clamped_and_the_rest_commits(
    buffer: dict[str, Any], project: Project, now: datetime, caplog: Any
) -> None:
    healthy = project_on_another_shard(buffer, project)
    tsdb.incr(project, "received", timestamp=now, count=2**62 + 2**61, rollups=[HOUR])
    tsdb.flush()
    # Fits in Redis (a new live hash), not in the stored bucket.
    tsdb.incr(project, "received", timestamp=now, count=2**62, rollups=[HOUR])
    tsdb.incr(project, "rejected", timestamp=now, count=3, rollups=[HOUR])
    tsdb.incr(healthy, "received", timestamp=now, count=4, rollups=[HOUR])
    with caplog.at_level(logging.ERROR, logger="project_stats.flush"):
        result = tsdb.flush()
    assert result.batches == 2 and result.failed == 0
    assert stored(project) == MAX
    assert stored(project, stat="rejected") == 3
    assert stored(healthy) == 4
    [record] = [r for r in caplog.records if "past 2**63 - 1" in r.getMessage()]
    assert f"project {project.pk}" in record.getMessage()
    assert tsdb.flush().rows == 0
    assert hourly(project, now) == MAX


# -- bounded transactions and batches ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_flush_transactions_hold_at_most_flush_max_rows(
    settings: Any, buffer: dict[str, Any], now: datetime
) -> None:
    # 10 s buckets, stored here (not Redis-only), make many rows quickly.
    settings.PROJECT_STATS = {
        "BUFFER": {**buffer, "FLUSH_MAX_ROWS": 10, "SHARDS": 1, "REDIS_ONLY_ROLLUPS": ()}
    }
    projects = ProjectFactory.create_batch(3)
    second = int(now.timestamp())
    # 3 projects x 12 seconds x 1 rollup = 36 rows, in calls of 12 and one of 12.
    for project in projects:
        tsdb.incr_many([(project, "received", second - 10 * i, 1) for i in range(12)], rollups=[10])
    transactions: list[str] = []
    buffer_module.crash_hook = transactions.append
    result = tsdb.flush()
    assert result.rows == 36
    assert transactions.count("applying") >= 4  # ceil(36 / 10), whole batches each
    assert buffer_module.pending_batch_ids() == set()
    for project in projects:
        assert stored(project, rollup=10) == 12


def test_a_full_live_hash_is_closed_into_a_batch(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "FLUSH_MAX_ROWS": 8, "REDIS_ONLY_ROLLUPS": ()}}
    second = int(now.timestamp())
    for i in range(6):
        tsdb.incr(project, "received", timestamp=second - 10 * i, rollups=[10])
    assert len(buffer_module.pending_batch_ids()) >= 1  # closed without a flush
    last = tsdb.get_range(project, "received", second - 50, second, rollup=10)
    assert [count for _, count in last] == [1] * 6
    tsdb.flush()
    assert stored(project, rollup=10) == 6


# -- delete while another flusher holds the shard --------------------------------


def hold_lease(config: dict[str, Any], project: Project, seconds: float) -> Any:
    client = redis_client(config)
    key = f"{{{config['PREFIX']}:{shard_of(config, project)}}}:lease"
    client.set(key, "another-flusher", px=int(seconds * 1000))
    return client, key


@pytest.mark.django_db(transaction=True)
def test_delete_waits_for_a_flusher_holding_the_shard(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "LEASE_SECONDS": 1}}
    tsdb.incr(project, "received", timestamp=now, count=4)
    hold_lease(buffer, project, 1.0)  # a flusher that died holding it
    tsdb.delete([project])
    assert hourly(project, now) == 0
    tsdb.flush()
    assert stored(project) == 0 and hourly(project, now) == 0


@pytest.mark.django_db(transaction=True)
def test_delete_raises_and_deletes_nothing_while_the_shard_stays_held(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "LEASE_SECONDS": 1}}
    tsdb.incr(project, "received", timestamp=now, count=1)
    tsdb.flush()
    tsdb.incr(project, "received", timestamp=now, count=4)
    client, key = hold_lease(buffer, project, 1.0)
    stop = threading.Event()

    def keep_holding() -> None:
        while not stop.wait(0.2):
            client.set(key, "another-flusher", px=1000)

    holder = threading.Thread(target=keep_holding)
    holder.start()
    try:
        with pytest.raises(tsdb.BufferUnavailable, match="held by another flusher"):
            tsdb.delete([project])
    finally:
        stop.set()
        holder.join(timeout=30)
    assert stored(project) == 1
    time.sleep(1.1)
    tsdb.flush()
    assert stored(project) == 5


# -- reads of many series ----------------------------------------------------------


def test_buffered_reads_of_many_series_are_bounded(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    settings.PROJECT_STATS = {"BUFFER": buffer, "MAX_TOTAL_POINTS": 1000}
    projects = [project, *ProjectFactory.create_batch(2, organization=project.organization)]
    start = now - timedelta(seconds=3600)  # 361 points at 10 s: 3 x 361 > 1000
    for read in (tsdb.get_range_total, tsdb.get_range_by_project):
        with pytest.raises(tsdb.QueryError, match="the limit is 1000"):
            read(projects, "received", start, now, rollup=10)
    assert len(tsdb.get_range_total(projects[:2], "received", start, now, rollup=10)) == 361


def test_organization_stats_past_the_bound_answer_400_with_the_buffer(
    settings: Any, buffer: dict[str, Any], project: Project
) -> None:
    settings.PROJECT_STATS = {"BUFFER": buffer, "MAX_TOTAL_POINTS": 1000}
    ProjectFactory.create_batch(2, organization=project.organization)
    member = OrganizationMemberFactory(organization=project.organization)
    token: ApiToken = ApiTokenFactory(user=member.user, scopes=["org:read"])
    url = reverse("project_stats:organization-stats", args=[project.organization.slug])
    until = int(time.time())
    response = Client().get(
        url, {"resolution": "10s", "since": until - 3600, "until": until}, **bearer(token)
    )
    assert response.status_code == 400
    assert "MAX_TOTAL_POINTS" in response.json()["detail"]


def test_redis_reads_only_the_buckets_it_holds(
    settings: Any, redis_server: Any, project: Project, now: datetime
) -> None:
    # A server of the test's own: its command statistics count only this read.
    buffer = buffer_settings("single", redis_server.url)
    settings.PROJECT_STATS = {"BUFFER": buffer}
    projects = [project, *ProjectFactory.create_batch(39, organization=project.organization)]
    tsdb.incr_many([(p, "received", now, 1) for p in projects], rollups=[10])
    client = redis_client(buffer)
    client.config_resetstat()
    start = now - timedelta(seconds=3590)  # 360 points x 40 projects
    series = tsdb.get_range_total(projects, "received", start, now, rollup=10)
    assert series[-1][1] == 40 and sum(count for _, count in series) == 40
    hmget = client.info("commandstats").get("cmdstat_hmget", {"calls": 0})
    # One HMGET per live hash (8 shards) for the one bucket held, not one
    # per 500 of the 14,400 fields asked for (29 per hash).
    assert hmget["calls"] <= int(buffer["SHARDS"])


class Crash(Exception):
    """Raised at a crash point: the flush stops there, as if its process died."""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("point", ["claimed", "committed", None])
def test_a_flush_between_the_rounds_of_a_read_counts_each_batch_once(
    monkeypatch: pytest.MonkeyPatch,
    buffer: dict[str, Any],
    project: Project,
    now: datetime,
    point: str | None,
) -> None:
    projects = [project, *ProjectFactory.create_batch(99, organization=project.organization)]
    tsdb.incr_many([(p, "received", now, 1) for p in projects])
    tsdb.flush()
    tsdb.incr_many([(p, "received", now, 2) for p in projects])  # one live hash per shard
    rounds: list[int] = []
    every_reply = buffer_module.client._every_reply

    def flush_after_the_first_round(config: Any, source: str, calls: Any) -> list[Any]:
        replies = every_reply(config, source, calls)
        if source is buffer_module.scripts.READ:
            rounds.append(len(calls))
            if len(rounds) == 1:
                # The live hashes are claimed (and committed) after some of
                # their projects were read, before the others are.
                def crash(reached: str) -> None:
                    if reached == point:
                        raise Crash(reached)

                buffer_module.crash_hook = crash
                with contextlib.suppress(Crash):
                    tsdb.flush()
                buffer_module.crash_hook = None
        return replies

    monkeypatch.setattr(buffer_module.client, "_every_reply", flush_after_the_first_round)
    hour = bucket_start(now, HOUR)
    # 100 projects x 14 stats x 24 buckets: several rounds of several scripts.
    query = tsdb.plan_stats_range(READ_STATS, hour - 23 * HOUR, hour, rollup=HOUR)
    cells = tsdb.get_stats_by_project(projects, query)
    assert len(rounds) >= 2
    assert cells == {(p.pk, stat_code("received"), hour): 3 for p in projects}


def test_redis_only_reads_run_in_bounded_scripts(
    settings: Any, redis_server: Any, project: Project, now: datetime
) -> None:
    # A server of the test's own: its slow log records every script of the read.
    buffer = buffer_settings("single", redis_server.url, REDIS_ONLY_ROLLUPS=[10])
    settings.PROJECT_STATS = {"BUFFER": buffer}
    projects = [project, *ProjectFactory.create_batch(249, organization=project.organization)]
    tsdb.incr_many([(p, "received", now, 1) for p in projects], rollups=[10])
    start = now - timedelta(seconds=3600)  # 361 points x 250 projects
    tsdb.get_range_total(projects[:1], "received", start, now, rollup=10)  # scripts loaded
    client = redis_server.client()
    log_every_command(client)
    series = tsdb.get_range_total(projects, "received", start, now, rollup=10)
    assert series[-1][1] == 250 and sum(count for _, count in series) == 250
    scripts = logged_scripts(client, buffer_module.scripts.SHA[buffer_module.scripts.READ_SHORT])
    # After rollup, first, last, stats and environment: "group=pk,pk,...".
    per_script = [sum(len(group.split(b",")) for group in args[5:]) for args in scripts]
    assert sum(per_script) == 250
    assert max(per_script) * 361 <= 5000
    client.close()
