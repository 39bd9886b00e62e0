"""The Redis write buffer (``tsdb/buffer.py``) on one Redis and on a 3-node cluster.

Real servers only: the Redis at 127.0.0.1:6379 (database 15, a key prefix of
each test's own) and the cluster ``conftest.redis_cluster`` starts.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from project_stats import tsdb
from project_stats.exceptions import BUFFER_UNAVAILABLE, RETRY_AFTER_SECONDS
from project_stats.models import ApiToken, AppliedBatch, EventCount, Project
from project_stats.tsdb import buffer as buffer_module
from project_stats.tsdb.rollups import bucket_start

from .conftest import bearer
from .factories import ProjectFactory
from .redis_servers import _free_port

pytestmark = pytest.mark.django_db

HOUR = 3600


def hourly(project: Project | int, now: datetime, hours: int = 1) -> list[tuple[int, int]]:
    return tsdb.get_range(project, "received", now - timedelta(hours=hours), now, rollup=HOUR)


def stored(project: Project) -> int:
    return sum(
        EventCount.objects.filter(project=project, rollup=HOUR, environment="").values_list(
            "count", flat=True
        )
    )


class Crash(Exception):
    """Raised at a crash point: the flush stops there, as if its process died."""


def crash_at(point: str) -> None:
    def hook(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    buffer_module.crash_hook = hook


def stored_rollups() -> int:
    """How many configured rollups the database keeps (the others live in Redis only)."""
    return len([r for r, _ in tsdb.get_rollups() if r not in buffer_module.redis_only_rollups()])


def test_writes_go_to_redis_and_reads_see_them(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    with CaptureQueriesContext(connection) as ctx:
        tsdb.incr(project, "received", timestamp=now, count=3)
        tsdb.incr_many([(project, "received", now, 2), (project, "received", now, 1, "prod")])
    assert ctx.captured_queries == []
    assert not EventCount.objects.exists()
    assert hourly(project, now)[-1] == (bucket_start(now, HOUR), 6)
    assert tsdb.environment_exists(project.organization, "prod")
    assert not tsdb.environment_exists(project.organization, "staging")

    result = tsdb.flush()
    rows = 2 * stored_rollups()  # the total and "prod"
    assert (result.rows, result.batches, result.shards, result.skipped) == (rows, 1, 1, 0)
    assert result.lag is not None and result.lag >= 0
    assert stored(project) == 6
    assert hourly(project, now)[-1][1] == 6
    assert tsdb.flush().rows == 0
    assert AppliedBatch.objects.count() == 1


# Acknowledging waits for the commit: these stop a flush after it, so they
# run outside the test case's transaction.
@pytest.mark.django_db(transaction=True)
def test_reads_cost_one_statement(
    buffer: dict[str, Any], project: Project, other_project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now)
    tsdb.flush()
    tsdb.incr(other_project, "received", timestamp=now, count=2)
    crash_at("committed")
    tsdb.incr(project, "received", timestamp=now, count=4)
    with pytest.raises(Crash):
        tsdb.flush()  # a batch applied, not acknowledged: the reads check its id
    buffer_module.crash_hook = None
    tsdb.incr(project, "received", timestamp=now, count=8)
    start = now - timedelta(hours=1)
    for read in (
        lambda: tsdb.get_range(project, "received", start, now, rollup=HOUR),
        lambda: tsdb.get_range_total([project, other_project], "received", start, now, rollup=HOUR),
        lambda: tsdb.get_range_by_project([project, other_project], "received", start, now),
    ):
        with CaptureQueriesContext(connection) as ctx:
            read()
        assert len(ctx.captured_queries) == 1
    assert tsdb.get_range(project, "received", start, now, rollup=HOUR)[-1][1] == 13
    total = tsdb.get_range_total(
        Project.objects.filter(organization=project.organization), "received", start, now
    )
    assert sum(count for _, count in total) == 15


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("point", ["claimed", "read", "applying", "committed", "acked"])
def test_a_flush_stopped_at_each_step_loses_and_doubles_nothing(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime, point: str
) -> None:
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "LEASE_SECONDS": 0.3}}
    tsdb.incr(project, "received", timestamp=now, count=5)
    crash_at(point)
    with pytest.raises(Crash):
        tsdb.flush()
    buffer_module.crash_hook = None
    time.sleep(0.4)  # the lease of the stopped flush runs out (it may still hold it)
    # Between the failed flush and the next: reads exact, new writes go to a new live hash.
    assert hourly(project, now)[-1][1] == 5
    tsdb.incr(project, "received", timestamp=now, count=1)
    assert hourly(project, now)[-1][1] == 6
    result = tsdb.flush()
    assert stored(project) == 6
    assert hourly(project, now)[-1][1] == 6
    if point in ("committed", "acked"):
        assert result.skipped == (1 if point == "committed" else 0)
    assert tsdb.flush().rows == 0
    assert stored(project) == 6


def test_increments_during_a_flush_go_to_the_next(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=1)

    def write_meanwhile(point: str) -> None:
        if point == "read":
            tsdb.incr(project, "received", timestamp=now, count=10)

    buffer_module.crash_hook = write_meanwhile
    assert tsdb.flush().batches == 1
    buffer_module.crash_hook = None
    assert stored(project) == 1
    assert hourly(project, now)[-1][1] == 11
    tsdb.flush()
    assert stored(project) == 11


def test_a_held_lease_makes_other_flushers_wait(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now)
    others: list[tsdb.FlushResult] = []

    def flush_meanwhile(point: str) -> None:
        if point == "claimed" and not others:
            others.append(tsdb.flush())

    buffer_module.crash_hook = flush_meanwhile
    tsdb.flush()
    buffer_module.crash_hook = None
    assert others[0].busy == 1 and others[0].rows == 0
    assert stored(project) == 1


def test_a_batch_of_a_deleted_project_is_dropped(
    buffer: dict[str, Any], project: Project, other_project: Project, now: datetime
) -> None:
    tsdb.incr_many([(project, "received", now), (other_project, "received", now)])
    Project.objects.filter(pk=project.pk).delete()
    tsdb.flush()
    assert stored(other_project) == 1
    assert not EventCount.objects.filter(project_id=project.pk).exists()


def test_delete_flushes_first_so_nothing_comes_back(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=3)
    assert tsdb.delete([project]) == stored_rollups()
    tsdb.flush()
    assert hourly(project, now)[-1][1] == 0


def unreachable(settings: Any, buffer: dict[str, Any], **extra: Any) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "URL": url, "CLUSTER": False, **extra}}


def test_redis_down_raises_by_default_and_writes_nothing(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    unreachable(settings, buffer)
    with pytest.raises(tsdb.BufferUnavailable, match="unavailable"):
        tsdb.incr(project, "received", timestamp=now)
    with pytest.raises(tsdb.BufferUnavailable):
        hourly(project, now)
    with pytest.raises(tsdb.BufferUnavailable):
        tsdb.flush()
    assert not EventCount.objects.exists()


def test_redis_down_with_database_fallbacks(
    settings: Any, buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)  # buffered, unreadable below
    unreachable(settings, buffer, ON_ERROR="database", READ_ON_ERROR="database")
    tsdb.incr(project, "received", timestamp=now, count=5)
    assert stored(project) == 5
    assert hourly(project, now)[-1][1] == 5
    settings.PROJECT_STATS = {"BUFFER": buffer}
    assert hourly(project, now)[-1][1] == 7
    tsdb.flush()
    assert stored(project) == 7


def test_the_endpoint_answers_503_when_redis_is_down(
    settings: Any, buffer: dict[str, Any], project: Project, member_token: ApiToken
) -> None:
    path = reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": project.organization.slug,
            "project_id_or_slug": project.slug,
        },
    )
    assert Client().get(path, **bearer(member_token)).status_code == 200
    unreachable(settings, buffer)
    response = Client().get(path, **bearer(member_token))
    assert response.status_code == 503
    assert json.loads(response.content) == {"detail": BUFFER_UNAVAILABLE}
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    unreachable(settings, buffer, READ_ON_ERROR="database")
    assert Client().get(path, **bearer(member_token)).status_code == 200


def test_flush_command(buffer: dict[str, Any], project: Project, now: datetime) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)
    out = io.StringIO()
    call_command("project_stats_flush", stdout=out)
    assert f"Flushed {stored_rollups()} rows from 1 batches of 1 shards" in out.getvalue()
    assert stored(project) == 2


def test_flush_command_loop_stops_on_sigterm(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    out = io.StringIO()
    try:
        call_command("project_stats_flush", "--loop", "--interval", "0.2", stdout=out)
    finally:
        timer.cancel()
    assert out.getvalue().rstrip().endswith("Stopped.")
    assert stored(project) == 2


def test_flush_command_loop_retries_while_redis_is_down(
    settings: Any, buffer: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Retried --max-failures times, each logged once as a warning, then a
    non-zero exit (CommandError) for the supervisor to restart and alert."""
    unreachable(settings, buffer)
    # Only a safety net: the loop gives up long before this.
    timer = threading.Timer(120.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            caplog.at_level(logging.INFO, logger="project_stats.flush"),
            pytest.raises(CommandError, match="3 flushes failed in a row") as raised,
        ):
            call_command(
                "project_stats_flush",
                *("--loop", "--interval", "0.05", "--max-failures", "3"),
                stdout=out,
                stderr=err,
            )
    finally:
        timer.cancel()
    assert "Redis is unavailable" in str(raised.value)
    failed = [r for r in caplog.records if r.getMessage().startswith("Flush failed")]
    assert len(failed) == 3
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in failed)
    assert "Redis is unavailable" in failed[0].getMessage()
    assert "Flush failed" not in err.getvalue()  # logged once, not printed a second time
    assert "Stopped." not in out.getvalue()


def test_flush_command_loop_with_max_failures_0_retries_until_stopped(
    settings: Any, buffer: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    unreachable(settings, buffer)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    out = io.StringIO()
    try:
        with caplog.at_level(logging.WARNING, logger="project_stats.flush"):
            call_command(
                "project_stats_flush",
                *("--loop", "--interval", "0.05", "--max-failures", "0"),
                stdout=out,
            )
    finally:
        timer.cancel()
    assert [r for r in caplog.records if r.getMessage().startswith("Flush failed")]
    assert out.getvalue().rstrip().endswith("Stopped.")
    with pytest.raises(CommandError, match="unavailable"):
        call_command("project_stats_flush")


def test_flush_command_refuses_without_a_buffer_or_with_a_bad_interval(
    buffer: dict[str, Any], settings: Any
) -> None:
    with pytest.raises(CommandError, match="interval"):
        call_command("project_stats_flush", "--interval", "0")
    settings.PROJECT_STATS = {}
    with pytest.raises(CommandError, match="BUFFER"):
        call_command("project_stats_flush")


def test_backfill_flush_option(buffer: dict[str, Any], project: Project, settings: Any) -> None:
    # Built from stored 10 s buckets: that rollup is kept in the database here.
    settings.PROJECT_STATS = {"BUFFER": {**buffer, "REDIS_ONLY_ROLLUPS": ()}}
    day = bucket_start(datetime.now().astimezone(), 86400) - 86400
    tsdb.incr(project, "received", timestamp=day + 10, count=4, rollups=[10])
    out = io.StringIO()
    call_command(
        "project_stats_backfill", "--flush", "--rollup", "1h", "--since", str(day), stdout=out
    )
    assert "Flushed 1 rows" in out.getvalue()
    assert EventCount.objects.get(project=project, rollup=HOUR).count == 4
    with pytest.raises(CommandError, match="dry-run"):
        call_command("project_stats_backfill", "--flush", "--dry-run")


@pytest.mark.django_db(transaction=True)
def test_prune_forgets_old_applied_ids_but_not_pending_ones(
    buffer: dict[str, Any], settings: Any, project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now)
    tsdb.flush()
    crash_at("committed")
    tsdb.incr(project, "received", timestamp=now)
    with pytest.raises(Crash):
        tsdb.flush()
    buffer_module.crash_hook = None
    assert AppliedBatch.objects.count() == 2
    later = datetime.now().astimezone() + timedelta(days=8)
    assert tsdb.prune_applied_batches(now=later, dry_run=True) == 1
    assert tsdb.prune_applied_batches(now=later) == 1
    assert AppliedBatch.objects.count() == 1  # the claimed batch's id stays
    assert tsdb.flush().skipped == 1
    assert stored(project) == 2
    out = io.StringIO()
    call_command("project_stats_prune", stdout=out)
    assert "applied batch" not in out.getvalue()


def test_cluster_node_stopped_and_restarted(
    settings: Any, buffer: dict[str, Any], redis_cluster: Any, now: datetime
) -> None:
    if not buffer["CLUSTER"]:
        pytest.skip("a cluster node")
    import redis

    projects = ProjectFactory.create_batch(8)  # on every shard, so on every node
    tsdb.incr_many([(p, "received", now, 1) for p in projects])
    client = redis.RedisCluster.from_url(buffer["URL"])
    victim = projects[0]
    key = "{" + f"{buffer['PREFIX']}:{victim.pk % buffer['SHARDS']}" + "}:live"
    port = client.get_node_from_key(key).port
    client.close()
    redis_cluster.stop_node(port)
    try:
        with pytest.raises(tsdb.BufferUnavailable):
            tsdb.incr(victim, "received", timestamp=now, count=10)
        with pytest.raises(tsdb.BufferUnavailable):
            tsdb.flush()
        settings.PROJECT_STATS = {"BUFFER": {**buffer, "ON_ERROR": "database"}}
        tsdb.incr(victim, "received", timestamp=now, count=100)
        assert stored(victim) == 100
    finally:
        redis_cluster.start_node(port)
        redis_cluster.wait_healthy()
    settings.PROJECT_STATS = {"BUFFER": buffer}
    for _ in range(3):  # stale connections to the restarted node are dropped
        try:
            tsdb.flush()
            break
        except tsdb.BufferUnavailable:
            continue
    assert stored(victim) == 101
    assert [stored(p) for p in projects[1:]] == [1] * 7
    assert hourly(victim, now)[-1][1] == 101


@pytest.mark.django_db(transaction=True)
def test_a_slot_moved_to_another_node_is_followed_after_one_refusal(
    settings: Any, killable_cluster: Any, now: datetime
) -> None:
    import redis

    from .redis_servers import buffer_settings

    config = buffer_settings("cluster", killable_cluster.url)
    settings.PROJECT_STATS = {"BUFFER": config}
    project = ProjectFactory()
    tsdb.incr(project, "received", timestamp=now, rollups=[HOUR])  # the slot map is cached
    tag = "{" + f"{config['PREFIX']}:{project.pk % config['SHARDS']}" + "}"
    admin = redis.RedisCluster.from_url(killable_cluster.url)
    slot = admin.keyslot(f"{tag}:live")
    source = admin.get_node_from_key(f"{tag}:live")
    target = next(node for node in admin.get_primaries() if node.port != source.port)
    admin.close()

    def node(port: int, *args: str) -> str:
        return str(killable_cluster.command(port, *args))

    source_id, target_id = (
        node(source.port, "CLUSTER", "MYID"),
        node(target.port, "CLUSTER", "MYID"),
    )
    # Resharding the slot, as redis-cli --cluster reshard does.
    node(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    node(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    keys = node(source.port, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
    assert keys, "the shard's keys were not in the slot"
    node(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
    for port in killable_cluster.ports:
        node(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    # The first write meets the old owner's MOVED: not run, refused as unavailable...
    with pytest.raises(tsdb.BufferUnavailable):
        tsdb.incr(project, "received", timestamp=now, count=10, rollups=[HOUR])
    # ...and the client follows the slot from then on.
    tsdb.incr(project, "received", timestamp=now, count=2, rollups=[HOUR])
    tsdb.flush()
    assert stored(project) == 3
    assert hourly(project, now)[-1][1] == 3
