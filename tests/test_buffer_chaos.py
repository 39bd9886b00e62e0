"""Chaos: writers, flushers and a reader at once while flushers and Redis are killed.

Writer processes keep a ledger of what the calls that returned wrote
(acknowledged) and of what the calls that raised tried to write (uncertain:
Redis may have run them). Flushers are SIGKILLed and replaced at random
moments; Redis (appendfsync always: it loses nothing it acknowledged) is
SIGKILLed and restarted twice, or one node of a cluster is; one Redis is
reached through a proxy that loses a reply after its command ran, every
second or so (a network cut: the client cannot know). A reader checks
meanwhile that no series ever goes down. At the end, after a last flush,
every stored series and rollup holds its acknowledged count, or more but
no more than acknowledged + uncertain; no read ever saw more than that.

The schedule and the writes are seeded; the timing is the machine's.
``CHAOS_SECONDS`` (default 30) sets how long the chaos lasts; ``pytest -s``
shows the figures. PostgreSQL only: the processes share the test database.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection

from project_stats import tsdb
from project_stats.constants import Stat
from project_stats.models import EventCount

from . import chaos_workers
from .chaos_workers import FLUSH_ERRORS, FLUSH_UNAVAILABLE, FLUSHES, Series
from .factories import ProjectFactory
from .redis_servers import Cluster, RedisServer, buffer_settings, redis_only_rows
from .tcp_proxy import TcpProxy

pytestmark = [pytest.mark.server_db, pytest.mark.django_db(transaction=True)]

SPAWN = multiprocessing.get_context("spawn")
SEED = 18
WRITERS = 3
FLUSHERS = 2
PROJECTS = 6
LEASE = 1.0


def chaos_seconds() -> float:
    return float(os.environ.get("CHAOS_SECONDS", "30"))


@dataclass
class Fault:
    """How to crash the Redis side and bring it back."""

    name: str
    crash: Callable[[], None]
    recover: Callable[[], None]
    downtime: tuple[float, float]


@dataclass
class Flusher:
    process: Any
    counters: Any


def start_flusher(database: dict[str, Any], project_stats: dict[str, Any]) -> Flusher:
    counters = SPAWN.RawArray("q", 3)
    process = SPAWN.Process(target=chaos_workers.flush, args=(database, project_stats, counters))
    process.start()
    return Flusher(process, counters)


def stored_series(project_ids: list[int], config: dict[str, Any]) -> Counter[Series]:
    """What is recorded: the database's rows, and the rollups kept in Redis only."""
    stored: Counter[Series] = Counter()
    for project_id, environment, rollup, timestamp, count in EventCount.objects.filter(
        project_id__in=project_ids, stat=Stat.RECEIVED
    ).values_list("project_id", "environment", "rollup", "timestamp", "count"):
        stored[(project_id, environment, rollup, int(timestamp.timestamp()))] += count
    for (pk, stat, environment, rollup, bucket), count in redis_only_rows(config).items():
        if pk in project_ids and stat == Stat.RECEIVED:
            stored[(pk, environment, rollup, bucket)] += count
    return stored


def flush_to_the_end() -> int:
    """Flush until a flush finds nothing, waiting out dead flushers' leases; flushes made."""
    deadline = time.monotonic() + 180
    flushes = 0
    while True:
        try:
            result = tsdb.flush()
            flushes += 1
            if not (result.rows or result.batches or result.skipped or result.busy):
                return flushes
            if result.busy:
                time.sleep(LEASE / 2)
        except tsdb.BufferUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        if time.monotonic() > deadline:
            raise AssertionError("the buffer did not empty within 180 s")


def run_chaos(project_stats: dict[str, Any], fault: Fault, proxy: TcpProxy | None = None) -> None:
    rng = random.Random(SEED)
    project_ids = [p.pk for p in ProjectFactory.create_batch(PROJECTS)]
    now = int(time.time())
    # Recent seconds, so every rollup (10 s, an hour, a day) keeps them.
    seconds = [now - 900 + 14 * k + rng.randrange(4) for k in range(60)]
    database = dict(connection.settings_dict)
    stop = SPAWN.Event()
    writer_results = SPAWN.Queue()
    reader_results = SPAWN.Queue()
    writers = [
        SPAWN.Process(
            target=chaos_workers.write,
            args=(database, project_stats, project_ids, seconds, seed, stop, writer_results),
        )
        for seed in range(WRITERS)
    ]
    reader = SPAWN.Process(
        target=chaos_workers.read,
        args=(database, project_stats, project_ids, seconds[0], seconds[-1], stop, reader_results),
    )
    flushers = [start_flusher(database, project_stats) for _ in range(FLUSHERS)]
    every_flusher = list(flushers)
    for process in [*writers, reader]:
        process.start()
    flusher_kills = redis_kills = 0
    try:
        # Chaos begins once the children are up: a flusher has flushed.
        ready_by = time.monotonic() + 120
        while not any(f.counters[FLUSHES] for f in flushers):
            assert time.monotonic() < ready_by, "no flusher started within 120 s"
            time.sleep(0.1)
        duration = chaos_seconds()
        begin = time.monotonic()
        end = begin + duration
        redis_at = [
            begin + duration * rng.uniform(0.2, 0.35),
            begin + duration * rng.uniform(0.55, 0.7),
        ]
        flusher_at = begin + rng.uniform(0.3, 1.5)
        drop_at = begin + rng.uniform(0.3, 1.5)
        while time.monotonic() < end:
            moment = time.monotonic()
            if proxy is not None and moment >= drop_at:
                # The next script's reply is lost after it ran (a write's, a
                # flush's or a read's, whichever comes first).
                proxy.drop_next_reply(containing=b"EVALSHA")
                drop_at = moment + rng.uniform(0.3, 1.5)
            if redis_at and moment >= redis_at[0]:
                redis_at.pop(0)
                fault.crash()
                redis_kills += 1
                time.sleep(rng.uniform(*fault.downtime))
                fault.recover()
            if moment >= flusher_at:
                index = rng.randrange(len(flushers))
                flushers[index].process.kill()
                flushers[index].process.join(timeout=30)
                flusher_kills += 1
                flushers[index] = start_flusher(database, project_stats)
                every_flusher.append(flushers[index])
                flusher_at = time.monotonic() + rng.uniform(0.3, 2.5)
            time.sleep(0.05)
        stop.set()
        ledgers = [writer_results.get(timeout=180) for _ in writers]
        observed = reader_results.get(timeout=180)
    finally:
        stop.set()
        for flusher in flushers:
            flusher.process.kill()
        for process in [*writers, reader] + [f.process for f in flushers]:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    broken = [r for r in [*ledgers, observed] if isinstance(r, str)]
    assert not broken, f"a child process failed: {broken}"
    final_flushes = flush_to_the_end()

    acknowledged: Counter[Series] = Counter()
    uncertain: Counter[Series] = Counter()
    calls: Counter[str] = Counter()
    for ledger_acknowledged, ledger_uncertain, ledger_calls in ledgers:
        acknowledged.update(ledger_acknowledged)
        uncertain.update(ledger_uncertain)
        calls.update(ledger_calls)
    highest, went_down, reads = observed
    config = dict(project_stats["BUFFER"])
    if proxy is not None:  # read the keys straight from the server, not through the proxy
        config["URL"] = f"redis://{proxy.target[0]}:{proxy.target[1]}/0"
    stored = stored_series(project_ids, config)
    exact = within = 0
    lost: list[str] = []
    extra: list[str] = []
    for key in sorted(set(acknowledged) | set(uncertain) | set(stored)):
        low, high, got = acknowledged[key], acknowledged[key] + uncertain[key], stored[key]
        project_id, environment, rollup, bucket = key
        line = (
            f"project {project_id} env {environment or '-'} rollup {rollup} bucket {bucket}: "
            f"acknowledged {low}, uncertain {uncertain[key]}, stored {got}"
        )
        if got == low:
            exact += 1
        elif low < got <= high:
            within += 1
        elif got < low:
            lost.append(f"{line} (lost {low - got})")
        else:
            extra.append(f"{line} (counted {got - high} more than possible)")
    above = [
        f"project {project_id} rollup {rollup} bucket {bucket}: read {seen}, "
        f"final possible total {acknowledged[key] + uncertain[key]}"
        for key, seen in sorted(highest.items())
        for project_id, _, rollup, bucket in [key]
        if seen > acknowledged[key] + uncertain[key]
    ]
    flush_counts = [sum(f.counters[slot] for f in every_flusher) for slot in range(3)]
    print(f"\n== buffer chaos ({fault.name}), {duration:.0f} s, seed {SEED}")

    def events(ledger: Counter[Series]) -> int:
        # Each increment is in every rollup: count it once, at the finest.
        return sum(v for (_, env, rollup, _), v in ledger.items() if not env and rollup == 10)

    print(
        f"writes: {calls['acknowledged']} calls acknowledged ({events(acknowledged)} events), "
        f"{calls['uncertain']} raised ({events(uncertain)} events uncertain)"
        + "".join(f", {n} {k}" for k, n in sorted(calls.items()) if k.startswith("unexpected"))
    )
    print(
        f"flushes: {flush_counts[FLUSHES]} done, {flush_counts[FLUSH_UNAVAILABLE]} met Redis "
        f"unavailable, {flush_counts[FLUSH_ERRORS]} other errors; {final_flushes} final"
    )
    print(f"kills: {flusher_kills} flushers (restarted), Redis {redis_kills} ({fault.name})")
    if proxy is not None:
        print(f"replies lost after the command ran: {proxy.dropped}")
    print(
        f"reads: {reads['reads']} answered, {reads['unavailable']} unavailable; "
        f"{len(went_down)} went down, {len(above)} above the final possible total"
    )
    print(
        f"series x rollups: {exact + within + len(lost) + len(extra)}: {exact} exact, "
        f"{within} within the uncertain, {len(lost)} lost counts, {len(extra)} counted too much"
    )
    for line in (lost + extra + went_down + above)[:40]:
        print("  " + line)
    assert calls["acknowledged"] and flush_counts[FLUSHES] and redis_kills == 2
    problems = [
        *(f"LOST {line}" for line in lost),
        *(f"DOUBLED {line}" for line in extra),
        *(f"WENT DOWN {line}" for line in went_down),
        *(f"ABOVE FINAL {line}" for line in above),
        # Anything but BufferUnavailable from the package is a bug (a 500 in a view).
        *(
            f"UNEXPECTED {k}: {n}"
            for k, n in sorted({**calls, **reads}.items())
            if k.startswith("unexpected")
        ),
        *([f"FLUSH ERRORS {flush_counts[FLUSH_ERRORS]}"] if flush_counts[FLUSH_ERRORS] else []),
    ]
    if problems:
        # The figures and the first problems, without a page of source.
        pytest.fail(
            f"{fault.name}: {len(problems)} problems (first 20 of them):\n"
            + "\n".join(problems[:20]),
            pytrace=False,
        )


def chaos_settings(kind: str, url: str) -> dict[str, Any]:
    return {
        "BUFFER": buffer_settings(kind, url, LEASE_SECONDS=LEASE, SOCKET_TIMEOUT=1.5),
    }


def test_chaos_on_one_redis(settings: Any, redis_server: RedisServer) -> None:
    assert redis_server.persistence == "aof-always"
    # Everyone reaches Redis through a proxy that loses a reply now and then.
    proxy = TcpProxy("127.0.0.1", redis_server.port).start()
    try:
        settings.PROJECT_STATS = chaos_settings("single", proxy.url)
        fault = Fault("one Redis, AOF always", redis_server.kill, redis_server.start, (0.5, 2.0))
        run_chaos(settings.PROJECT_STATS, fault, proxy)
    finally:
        proxy.stop()


def test_chaos_on_a_cluster(settings: Any, killable_cluster: Cluster) -> None:
    settings.PROJECT_STATS = chaos_settings("cluster", killable_cluster.url)
    port = killable_cluster.ports[random.Random(SEED).randrange(3)]

    def recover() -> None:
        killable_cluster.start_node(port)
        killable_cluster.wait_healthy()

    fault = Fault(
        "a 3-node cluster, one node, AOF always",
        lambda: killable_cluster.kill_node(port),
        recover,
        (1.0, 3.0),
    )
    run_chaos(settings.PROJECT_STATS, fault)
