"""Benchmark: one scrape of the site's buffer metrics (``BufferMetricsView``'s work).

``render_buffer_metrics()`` against the Redis at ``BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/14``) with 8 and 64 shards, one buffered delta per
shard, under a key prefix of this run (deleted at the end): the probe's
``INFO memory``, the stats script and the encoding. Prints a Markdown table.

    python bench/metrics_scrape.py [--scrapes 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scrapes", type=int, default=500)
    args = parser.parse_args()
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    settings.configure(
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "project_stats"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()
    import redis

    from project_stats.metrics import render_buffer_metrics
    from project_stats.tsdb import buffer

    print("| shards | median ms | p95 ms | bytes |")
    print("| ---: | ---: | ---: | ---: |")
    for shards in (8, 64):
        prefix = f"bench-metrics-{uuid.uuid4().hex[:8]}"
        config = {"URL": url, "PREFIX": prefix, "SHARDS": shards}
        settings.PROJECT_STATS = {"BUFFER": config}
        # One delta per shard: project pk == shard number.
        buffer.write([(shard, 1, "", 3600, 1_700_000_000, 1) for shard in range(shards)])
        body, _ = render_buffer_metrics()
        times = []
        for _ in range(args.scrapes):
            started = time.perf_counter()
            render_buffer_metrics()
            times.append(time.perf_counter() - started)
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(
            f"| {shards} | {statistics.median(times) * 1000:.2f} | {p95 * 1000:.2f} | {len(body)} |"
        )
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match="{" + prefix + ":*", count=1000):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    main()
