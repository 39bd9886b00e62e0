"""Benchmark: ``stats_v2`` over many projects with the write buffer, per Redis script.

An organization of ``--projects`` projects (default 2,000, one bulk insert)
on PostgreSQL ``project_stats_bench_v2buf``, a ``redis-server`` of its own
on a free port (``SLOWLOG`` records every command), ``--shards`` shards
(default 8). Every project gets buffered counts of three stats in each of
the last 24 hours and in a 10 s bucket of every minute of the last hour,
never flushed. Then ``stats_v2`` requests through Django's test client,
without ``groupBy=project``:

- 24 h at 1 h (the 1 h rollup, stored: buffered read of live and claimed hashes);
- 1 h at 1 min (the 10 s rollup, kept in Redis only), once as configured
  and once with ``MAX_TOTAL_POINTS`` raised so the read is allowed.

A thread PINGs the same Redis meanwhile. Prints a Markdown table per case:
the status, the read scripts run (``EVALSHA``), the longest and the sum of
their durations inside Redis (``SLOWLOG``), and the longest PING.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import django_site, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_v2buf"
GRAFANA = {"category": "error", "field": "sum(quantity)"}


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
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from tests.redis_servers import start_server

    migrated(DATABASE)
    django_site(DATABASE)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from project_stats import tsdb
    from project_stats.models import ApiToken, Organization, OrganizationMember, Project

    server = start_server("rdb")
    try:
        redis = server.client()
        buffer = {"URL": server.url, "PREFIX": "bench-v2", "SHARDS": args.shards}
        settings.PROJECT_STATS = {"BUFFER": buffer}
        Organization.objects.filter(slug="v2-buffered").delete()
        org = Organization.objects.create(slug="v2-buffered", name="Buffered")
        Project.objects.bulk_create(
            Project(organization=org, slug=f"p{i}", name=f"P{i}") for i in range(args.projects)
        )
        ids = list(Project.objects.filter(organization=org).values_list("pk", flat=True))
        user, _ = get_user_model()._default_manager.get_or_create(username="bench-v2buf")
        OrganizationMember.objects.get_or_create(organization=org, user=user)
        _, plaintext = ApiToken.objects.issue(user, name="bench", scopes=["org:read"])
        client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")

        now = int(time.time())
        rows: list[tuple[Any, ...]] = []
        for pk in ids:
            for hour in range(24):
                for stat in ("received", "rejected", "blacklisted"):
                    rows.append((pk, stat, now - hour * 3600, 1))
        tsdb.incr_many(rows, rollups=[3600, 86400])
        rows = [(pk, "received", now - minute * 60, 1) for pk in ids for minute in range(60)]
        tsdb.incr_many(rows, rollups=[10])

        path = f"/api/0/organizations/{org.slug}/stats_v2/"
        cases = [
            ("24 h at 1 h", {**GRAFANA, "statsPeriod": "24h", "interval": "1h"}, None),
            (
                "1 h at 1 min (10 s buckets)",
                {**GRAFANA, "statsPeriod": "1h", "interval": "1m"},
                None,
            ),
            (
                "1 h at 1 min, MAX_TOTAL_POINTS 10,000,000",
                {**GRAFANA, "statsPeriod": "1h", "interval": "1m"},
                10_000_000,
            ),
        ]
        redis.config_set("slowlog-max-len", 1_000_000)
        table_rows = []
        for name, params, limit in cases:
            settings.PROJECT_STATS = {"BUFFER": buffer}
            if limit is not None:
                settings.PROJECT_STATS["MAX_TOTAL_POINTS"] = limit
            client.get(path, params)  # scripts loaded, connections made
            redis.config_set("slowlog-log-slower-than", 0)
            redis.slowlog_reset()
            pinger = Pinger(server.url)
            pinger.start()
            statuses = set()
            for _ in range(args.repeat):
                statuses.add(client.get(path, params).status_code)
            pinger.stop.set()
            pinger.join()
            redis.config_set("slowlog-log-slower-than", -1)
            entries = redis.slowlog_get(1_000_000)
            scripts = [e["duration"] for e in entries if e["command"].startswith(b"EVALSHA")]
            table_rows.append(
                (
                    name,
                    ",".join(str(s) for s in sorted(statuses)),
                    len(scripts) // args.repeat,
                    f"{max(scripts, default=0) / 1000:.2f}",
                    f"{sum(scripts) / args.repeat / 1000:.1f}",
                    f"{pinger.longest:.1f}",
                )
            )
        redis.close()
    finally:
        server.stop()
        Organization.objects.filter(slug="v2-buffered").delete()
    print(
        f"### stats_v2 without groupBy=project, buffer on: {args.projects} projects, "
        f"{args.shards} shards ({args.repeat} requests each)\n"
    )
    print(
        table(
            [
                "request",
                "status",
                "scripts per request",
                "longest script ms",
                "script ms per request",
                "longest PING ms",
            ],
            table_rows,
        )
    )


if __name__ == "__main__":
    main()
