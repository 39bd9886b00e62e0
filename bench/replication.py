"""Benchmark: what guarding the buffer against a failover's loss costs a write.

A primary and one replica (``redis-server`` processes of its own on free
ports, snapshots only) and PostgreSQL ``project_stats_bench_repl`` (Django
needs one; buffered writes never touch it). ``tsdb.incr`` calls/s from one
process, through the buffer, in interleaved rounds of ``--calls`` calls:

- as is: Redis replicates asynchronously, a failover loses what the replica
  had not received;
- ``min-replicas-to-write 1`` and ``min-replicas-max-lag 10`` on the primary:
  it refuses writes (NOREPLICAS: unavailability, ``ON_ERROR`` decides) while
  no replica has acknowledged within 10 s, which bounds what a failover loses
  to those seconds of writes;
- each call followed by ``WAIT 1 1000`` on the same connection: the call
  returns once the replica has it (what a per-write option would cost).

Prints a Markdown table: the median calls/s and the median per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import django_site, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_repl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from tests.redis_servers import RedisServer

    migrated(DATABASE)
    django_site(DATABASE)
    from django.conf import settings

    from project_stats import tsdb
    from project_stats.tsdb import buffer

    primary = RedisServer("rdb")
    replica = RedisServer("rdb", ("--replicaof", "127.0.0.1", str(primary.port)))
    try:
        primary.start()
        replica.start()
        while primary.command("INFO", "replication").get("min_slaves_good_slaves") != 1:
            primary.command("CONFIG", "SET", "min-replicas-to-write", "1")  # to count them
            time.sleep(0.1)
        config = {"URL": primary.url, "PREFIX": "bench-repl", "SHARDS": 8}
        settings.PROJECT_STATS = {"BUFFER": config}
        client = buffer._client(buffer._config())
        now = int(time.time())

        def plain() -> None:
            tsdb.incr(1, "received", timestamp=now)

        def waited() -> None:
            tsdb.incr(1, "received", timestamp=now)
            # Single-threaded: the pool hands back the connection the write
            # used, so WAIT waits for that write.
            if client.execute_command("WAIT", 1, 1000) < 1:
                raise RuntimeError("WAIT timed out")

        def guard(on: bool) -> None:
            primary.command("CONFIG", "SET", "min-replicas-to-write", "1" if on else "0")
            primary.command("CONFIG", "SET", "min-replicas-max-lag", "10")

        cases: list[tuple[str, bool, Any]] = [
            ("asynchronous replication (as is)", False, plain),
            ("min-replicas-to-write 1, min-replicas-max-lag 10", True, plain),
            ("each call followed by WAIT 1 1000", False, waited),
        ]
        plain()  # the first write probes the server
        rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(args.rounds):
            for name, guarded, call in cases:
                guard(guarded)
                began = time.perf_counter()
                for _ in range(args.calls):
                    call()
                rates[name].append(args.calls / (time.perf_counter() - began))
        total = sum(len(r) for r in rates.values()) * args.calls + 1
        stored = sum(count for _, count in tsdb.get_range(1, "received", now, now, rollup=3600))
        print(
            table(
                ["tsdb.incr through the buffer", "calls/s (median)", "ms per call (median)"],
                [
                    (name, f"{statistics.median(r):,.0f}", f"{1000 / statistics.median(r):.3f}")
                    for name, r in rates.items()
                ],
            )
        )
        print(
            f"\n{args.rounds} rounds of {args.calls:,} calls each, interleaved; "
            f"{total:,} calls made, {stored:,} counted (a read of the buffered hour)."
        )
    finally:
        primary.stop()
        replica.stop()


if __name__ == "__main__":
    main()
