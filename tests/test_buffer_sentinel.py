"""The write buffer behind Redis Sentinel: a primary, a replica, three sentinels.

The primary is SIGKILLed and the sentinels promote the replica. Redis
replicates asynchronously, so the promoted replica lacks what it had not
received: those counts are lost, never counted twice. A batch the replica
holds is applied once, whether or not its flush reached the replica (the
incarnation check closes a live hash the former primary wrote). A demoted
primary's READONLY refusal is "not run". Timeouts are generous; ``pytest
-s`` shows the failover test's figures.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from project_stats import tsdb
from project_stats.constants import Stat
from project_stats.models import EventCount
from project_stats.tsdb import buffer as buffer_module

from . import chaos_workers, sentinel_workers
from .chaos_workers import FLUSHES, Series, _add
from .factories import ProjectFactory
from .redis_servers import RedisServer, SentinelGroup, buffer_settings, start_sentinel_group

pytestmark = pytest.mark.django_db(transaction=True)

SPAWN = multiprocessing.get_context("spawn")
SECOND = 1_700_000_000
ROLLUPS = (10, 3600, 86400)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    started = start_sentinel_group()
    yield started
    started.stop()


def use_buffer(settings: Any, group: SentinelGroup, **extra: Any) -> dict[str, Any]:
    config = buffer_settings("single", group.url, SOCKET_TIMEOUT=2.0, LEASE_SECONDS=1.0, **extra)
    settings.PROJECT_STATS = {**getattr(settings, "PROJECT_STATS", {}), "BUFFER": config}
    return config


def replicated(server: RedisServer) -> None:
    """Until the replica has everything ``server`` (the primary) ran so far:
    a write of our own, then ``WAIT 1``."""
    client = server.client()
    try:
        client.set("pstest-replicated", time.monotonic())
        assert client.wait(1, 10_000) == 1, "the replica did not catch up within 10 s"
    finally:
        client.close()


def retried(call: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``call()`` until the buffer stops raising BufferUnavailable (a failover)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except tsdb.BufferUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def flush_all() -> int:
    """Flush until a flush finds nothing (an earlier lease may still run); flushes made."""
    for flushes in range(1, 40):
        result = retried(tsdb.flush)
        if not (result.rows or result.batches or result.skipped or result.busy):
            return flushes
        if result.busy:
            time.sleep(0.5)
    raise AssertionError("the buffer did not empty in 40 flushes")


def stored(project_id: int) -> dict[int, int]:
    """Recorded total per rollup: the database's rows, and Redis for the
    rollups kept there only."""
    totals: Counter[int] = Counter(dict.fromkeys(ROLLUPS, 0))
    for rollup, count in EventCount.objects.filter(
        project_id=project_id, environment=""
    ).values_list("rollup", "count"):
        totals[rollup] += count
    for rollup in buffer_module.redis_only_rollups():
        series = tsdb.get_range(project_id, "received", SECOND, SECOND + 600, rollup=rollup)
        totals[rollup] += sum(count for _, count in series)
    return dict(totals)


def fail_over(group: SentinelGroup) -> None:
    """SIGKILL the primary; return once the replica is promoted."""
    group.primary.kill()
    group.wait_promoted(group.replica)


def claimed_batches(server: RedisServer, config: dict[str, Any], project_id: int) -> int:
    shard = buffer_module.keys._shard(config, project_id)
    return int(server.command("ZCARD", f"{buffer_module.keys._tag(config, shard)}:batches"))


def test_probe_asks_the_primary_the_sentinels_name(settings: Any, group: SentinelGroup) -> None:
    from project_stats.tsdb import redis_config

    use_buffer(settings, group)
    config = buffer_module.keys._config()
    (before,) = redis_config.probe(config)
    assert before.node == f"127.0.0.1:{group.primary.port}"
    assert before.info_allowed and before.policy == "noeviction"
    fail_over(group)
    (after,) = retried(lambda: redis_config.probe(config))
    assert after.node == f"127.0.0.1:{group.replica.port}"


def test_a_batch_is_applied_once_across_a_failover(settings: Any, group: SentinelGroup) -> None:
    """Write, flush (applied and acknowledged), write more; every write on the
    replica before the primary dies; after the failover, write and flush:
    each batch counted once."""
    use_buffer(settings, group)
    config = buffer_module.keys._config()
    project = ProjectFactory()
    tsdb.incr(project.pk, "received", count=5, timestamp=SECOND)
    replicated(group.primary)
    flush_all()
    assert stored(project.pk) == dict.fromkeys(ROLLUPS, 5)
    tsdb.incr(project.pk, "received", count=7, timestamp=SECOND)
    replicated(group.primary)
    fail_over(group)
    retried(lambda: tsdb.incr(project.pk, "received", count=11, timestamp=SECOND))
    # The live hash the former primary wrote was closed before these 11 were added.
    assert claimed_batches(group.replica, config, project.pk) == 1
    flush_all()
    assert stored(project.pk) == dict.fromkeys(ROLLUPS, 23)
    assert claimed_batches(group.replica, config, project.pk) == 0


def test_a_flush_the_replica_missed(settings: Any, group: SentinelGroup) -> None:
    """The replica has a write but not the flush that applied it (the primary
    dies first): the promoted replica gives the batch back live, under the id
    the database holds as applied. The next write must not add to it, or it
    would be skipped with it."""
    use_buffer(settings, group)
    config = buffer_module.keys._config()
    project = ProjectFactory()
    tsdb.incr(project.pk, "received", count=5, timestamp=SECOND)
    replicated(group.primary)
    assert group.replica.process is not None
    replica = group.replica.process.pid
    # The replica stops and its link is cut: what the primary runs next is
    # never sent to it (a stopped process reads nothing, and a reconnection
    # would wait for it).
    os.kill(replica, signal.SIGSTOP)
    try:
        group.primary.command("CLIENT", "KILL", "TYPE", "replica")
        flush_all()
        assert stored(project.pk) == dict.fromkeys(ROLLUPS, 5)
        group.primary.kill()
    finally:
        os.kill(replica, signal.SIGCONT)
    group.wait_promoted(group.replica)
    live = f"{buffer_module.keys._tag(config, buffer_module.keys._shard(config, project.pk))}:live"
    assert group.replica.command("HEXISTS", live, "~id"), "the replica got the flush"
    retried(lambda: tsdb.incr(project.pk, "received", count=7, timestamp=SECOND))
    flush_all()
    # 5 once (skipped in the database, where it already is), 7 not lost.
    assert stored(project.pk) == dict.fromkeys(ROLLUPS, 12)


def test_a_demoted_primary_refusal_is_not_run(settings: Any, group: SentinelGroup) -> None:
    """A pooled connection still reaches the former primary, now a replica
    (demoted by hand here, before the sentinels notice): READONLY refused the
    write, which ON_ERROR='database' writes to the database, once."""
    use_buffer(settings, group, ON_ERROR="database")
    project = ProjectFactory()
    tsdb.incr(project.pk, "received", count=5, timestamp=SECOND)  # a pooled connection
    group.replica.command("REPLICAOF", "NO", "ONE")
    group.primary.command("REPLICAOF", "127.0.0.1", str(group.replica.port))
    tsdb.incr(project.pk, "received", count=7, timestamp=SECOND)
    rows = dict(
        EventCount.objects.filter(project=project, environment="").values_list("rollup", "count")
    )
    stored_rollups = [r for r in ROLLUPS if r not in buffer_module.redis_only_rollups()]
    assert rows == dict.fromkeys(stored_rollups, 7)


def test_wait_replicas(settings: Any, group: SentinelGroup) -> None:
    """With WAIT_REPLICAS a write returns once the replica has it; one the
    replica does not acknowledge in time raises "may have been recorded"
    (it is, on the primary), and what was acknowledged survives a failover."""
    use_buffer(settings, group, WAIT_REPLICAS=1, WAIT_TIMEOUT=0.5)
    project = ProjectFactory()
    tsdb.incr(project.pk, "received", count=5, timestamp=SECOND)
    assert group.replica.process is not None
    replica = group.replica.process.pid
    os.kill(replica, signal.SIGSTOP)
    try:
        with pytest.raises(tsdb.BufferUnavailable, match="0 of 1 replicas") as raised:
            tsdb.incr(project.pk, "received", count=7, timestamp=SECOND)
    finally:
        os.kill(replica, signal.SIGCONT)
    assert "may have been recorded" in str(raised.value)
    tsdb.incr(project.pk, "received", count=11, timestamp=SECOND)
    fail_over(group)  # nothing waited for the replica since
    flush_all()
    assert stored(project.pk) == dict.fromkeys(ROLLUPS, 23)


# --- Writers and a flusher at work while the primary is SIGKILLed --------------------

WRITERS = 3
PROJECTS = 4


def stored_series(project_ids: list[int], config: dict[str, Any], port: int) -> Counter[Series]:
    """The database's rows, and the Redis-only rollups as the primary at ``port`` holds them."""
    from .redis_servers import redis_only_rows

    series: Counter[Series] = Counter()
    for project_id, environment, rollup, timestamp, count in EventCount.objects.filter(
        project_id__in=project_ids, stat=Stat.RECEIVED
    ).values_list("project_id", "environment", "rollup", "timestamp", "count"):
        series[(project_id, environment, rollup, int(timestamp.timestamp()))] += count
    direct = {**config, "URL": f"redis://127.0.0.1:{port}/0"}
    for (pk, stat, environment, rollup, bucket), count in redis_only_rows(direct).items():
        if pk in project_ids and stat == Stat.RECEIVED:
            series[(pk, environment, rollup, bucket)] += count
    return series


def events(ledger: Counter[Series]) -> int:
    """Increments counted once each (the finest rollup, all environments)."""
    return sum(v for (_, env, rollup, _), v in ledger.items() if not env and rollup == 10)


@pytest.mark.postgres
def test_writers_through_a_failover(settings: Any, group: SentinelGroup) -> None:
    config = use_buffer(settings, group)
    project_ids = [p.pk for p in ProjectFactory.create_batch(PROJECTS)]
    now = int(time.time())
    seconds = [now - 600 + 10 * k for k in range(50)]  # recent: every rollup keeps them
    database = dict(connection.settings_dict)
    stop = SPAWN.Event()
    results = SPAWN.Queue()
    writers = [
        SPAWN.Process(
            target=sentinel_workers.write,
            args=(database, settings.PROJECT_STATS, project_ids, seconds, seed, stop, results),
        )
        for seed in range(WRITERS)
    ]
    counters = SPAWN.RawArray("q", 3)
    flusher = SPAWN.Process(
        target=chaos_workers.flush, args=(database, settings.PROJECT_STATS, counters)
    )
    for process in [*writers, flusher]:
        process.start()
    try:
        ready_by = time.monotonic() + 120
        while not counters[FLUSHES]:
            assert time.monotonic() < ready_by, "no flush within 120 s"
            time.sleep(0.1)
        time.sleep(2.0)  # writing and flushing under way
        # Whatever was acknowledged before this moment is on the replica once
        # WAIT returns (a later write of ours, the replica caught up with it).
        synced = time.monotonic()
        replicated(group.primary)
        time.sleep(0.5)  # what the replica may lack: half a second of writes at most
        group.primary.kill()
        killed = time.monotonic()
        group.wait_promoted(group.replica)
        promoted = time.monotonic()
        flushes_at_promotion = counters[FLUSHES]
        time.sleep(3.0)  # writing and flushing on the promoted replica
        stop.set()
        ledgers = [results.get(timeout=180) for _ in writers]
    finally:
        stop.set()
        flusher.kill()
        for process in [*writers, flusher]:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    broken = [ledger for ledger in ledgers if isinstance(ledger, str)]
    assert not broken, f"a writer failed: {broken}"
    flushes_after = counters[FLUSHES] - flushes_at_promotion
    flush_all()

    acknowledged: Counter[Series] = Counter()
    # Acknowledged by the primary after the last WAIT: the replica may lack them.
    unsynced: Counter[Series] = Counter()
    uncertain: Counter[Series] = Counter()
    calls: Counter[str] = Counter()
    after_promotion = unsynced_calls = 0
    for acked, ledger_uncertain, ledger_calls in ledgers:
        for began, returned, items in acked:
            _add(acknowledged, items)
            # Begun after the kill: the promoted replica ran it.
            if returned >= synced and began < killed:
                _add(unsynced, items)
                unsynced_calls += 1
            after_promotion += began > promoted
        uncertain.update(ledger_uncertain)
        calls.update(ledger_calls)
    got = stored_series(project_ids, config, group.replica.port)
    lost: Counter[Series] = Counter()
    problems = []
    for key in sorted(set(acknowledged) | set(uncertain) | set(got)):
        low, high = acknowledged[key] - unsynced[key], acknowledged[key] + uncertain[key]
        if got[key] < acknowledged[key]:
            lost[key] = acknowledged[key] - got[key]
        if not low <= got[key] <= high:
            problems.append(
                f"{key}: acknowledged {acknowledged[key]} ({unsynced[key]} after the last WAIT), "
                f"uncertain {uncertain[key]}, stored {got[key]}"
            )
    print(
        f"\n== Sentinel failover: {calls['acknowledged']} calls acknowledged "
        f"({events(acknowledged)} events), {calls['uncertain']} raised BufferUnavailable "
        f"({events(uncertain)} events uncertain); failover {promoted - killed:.1f} s; "
        f"{unsynced_calls} calls ({events(unsynced)} events) acknowledged between the last "
        f"WAIT and the kill, {events(lost)} events lost (the replica had not received them); "
        f"{after_promotion} calls acknowledged and {flushes_after} flushes after the promotion"
    )
    unexpected = {k: n for k, n in calls.items() if k.startswith("unexpected")}
    assert not unexpected, unexpected
    assert not problems, "\n".join(problems[:20])
    assert calls["uncertain"], "no writer met the failover"
    assert after_promotion and flushes_after, "writes and flushes did not go on after it"
