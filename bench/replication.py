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
- ``BUFFER["WAIT_REPLICAS"] = 1``: each write script is followed by ``WAIT
  1`` on its connection, the call returning once the replica has it.

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

    primary = RedisServer("rdb")
    replica = RedisServer("rdb", ("--replicaof", "127.0.0.1", str(primary.port)))
    try:
        primary.start()
        replica.start()
        while primary.command("INFO", "replication").get("min_slaves_good_slaves") != 1:
            primary.command("CONFIG", "SET", "min-replicas-to-write", "1")  # to count them
            time.sleep(0.1)
        config = {"URL": primary.url, "PREFIX": "bench-repl", "SHARDS": 8}
        now = int(time.time())

        def guard(on: bool) -> None:
            primary.command("CONFIG", "SET", "min-replicas-to-write", "1" if on else "0")
            primary.command("CONFIG", "SET", "min-replicas-max-lag", "10")

        cases: list[tuple[str, bool, dict[str, Any]]] = [
            ("asynchronous replication (as is)", False, {}),
            ("min-replicas-to-write 1, min-replicas-max-lag 10", True, {}),
            ('BUFFER["WAIT_REPLICAS"] = 1 (WAIT_TIMEOUT 1 s)', False, {"WAIT_REPLICAS": 1}),
        ]
        settings.PROJECT_STATS = {"BUFFER": config}
        tsdb.incr(1, "received", timestamp=now)  # the first write probes the server
        rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(args.rounds):
            for name, guarded, extra in cases:
                guard(guarded)
                settings.PROJECT_STATS = {"BUFFER": {**config, **extra}}
                began = time.perf_counter()
                for _ in range(args.calls):
                    tsdb.incr(1, "received", timestamp=now)
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
