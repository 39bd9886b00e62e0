"""Benchmark: buffered reads of many series, and how long they hold Redis.

An organization of ``--projects`` projects (default 300) on PostgreSQL
``project_stats_bench_buf``, each with a buffered increment in the current
10 s bucket, read as ``group=organization`` at 10 s over the last hour (361
points per project) and as ``group=project`` for 20 projects over a day at
1 h; ``MAX_TOTAL_POINTS`` is raised so the wide read is allowed. Meanwhile a
thread sends ``PING`` to the same Redis over its own connection in a loop:
the longest answer is how long one read blocked every other client.

Prints a Markdown table: per shape, the read's median and max wall time,
the Redis time of the read script (``INFO commandstats``), and the longest
PING seen during the reads.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import django_site, median, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_buf"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


class Pinger(threading.Thread):
    """PINGs Redis back to back; ``longest`` is the slowest answer, in ms."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.stop = threading.Event()
        self.longest = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            self.client.ping()
            self.longest = max(self.longest, (time.perf_counter() - started) * 1000)
            time.sleep(0.0005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    migrated(DATABASE)
    django_site(DATABASE)
    import redis
    from django.conf import settings

    from project_stats import tsdb
    from project_stats.models import Organization, Project

    buffer = {"URL": REDIS_URL, "PREFIX": f"bench-reads-{uuid.uuid4().hex[:8]}"}
    settings.PROJECT_STATS = {"BUFFER": buffer, "MAX_TOTAL_POINTS": 10_000_000}
    org, _ = Organization.objects.get_or_create(slug="buf-reads", defaults={"name": "Reads"})
    have = Project.objects.filter(organization=org).count()
    Project.objects.bulk_create(
        Project(organization=org, slug=f"r{i}", name=f"R{i}") for i in range(have, args.projects)
    )
    ids = list(
        Project.objects.filter(organization=org).order_by("pk").values_list("pk", flat=True)
    )[: args.projects]
    now = time.time()
    tsdb.incr_many([(pk, "received", now, 1) for pk in ids])

    client = redis.Redis.from_url(REDIS_URL)
    shapes: list[tuple[str, Any]] = [
        (
            f"organization total, {len(ids)} projects x 361 points at 10 s",
            lambda: tsdb.get_range_total(ids, "received", now - 3600, now, rollup=10),
        ),
        (
            "by project, 20 projects x 25 points at 1 h",
            lambda: tsdb.get_range_by_project(ids[:20], "received", now - 86400, now, rollup=3600),
        ),
    ]
    rows = []
    try:
        for name, read in shapes:
            read()  # scripts loaded, connections made
            client.config_resetstat()
            pinger = Pinger(REDIS_URL)
            pinger.start()
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                read()
                times.append((time.perf_counter() - started) * 1000)
            pinger.stop.set()
            pinger.join()
            stats = client.info("commandstats").get("cmdstat_evalsha", {})
            rows.append(
                (
                    name,
                    f"{median(times):.2f}",
                    f"{max(times):.2f}",
                    f"{stats.get('usec_per_call', 0) / 1000:.3f}",
                    f"{pinger.longest:.2f}",
                )
            )
    finally:
        for key in client.scan_iter(match="{" + buffer["PREFIX"] + ":*", count=1000):
            client.delete(key)
    print(f"### Buffered reads of many series ({args.repeat} reads each)\n")
    print(
        table(
            ["read", "median ms", "max ms", "Redis ms per script", "longest PING ms during reads"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
