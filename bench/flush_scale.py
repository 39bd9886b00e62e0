"""Benchmark: how many active series one database absorbs through the buffer.

For each count of active projects (``--projects``, default 1,000 and 10,000;
add 50,000 for the full table), 2 stats each, on PostgreSQL
``project_stats_bench_flush`` and the Redis at ``BENCH_REDIS_URL``:

1. one increment per project and stat in one second is buffered and flushed
   (every rollup's bucket is new: inserts only), then
2. the same one 10 s bucket later (a new 10 s bucket, the 1 h and 1 d ones
   updated: 2N inserts and 4N updates, a steady flush at a 5 s interval),
3. and the same with ``--buckets 6`` seconds 10 s apart (a 60 s interval),

each flushed by one flusher process and by two at once. Prints, per case,
the rows a flush wrote, its wall time, rows/s and the flushers' peak memory
(``VmHWM``): the data behind the README's sizing advice.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import django_site, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_flush"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
STATS = ("received", "rejected")


def setup(buffer: dict[str, Any]) -> None:
    django_site(DATABASE)
    from django.conf import settings

    settings.PROJECT_STATS = {"BUFFER": buffer}


def peak_mb(pid: int) -> float:
    """The process's peak resident memory since it started (``VmHWM``), in MB.

    Not ``ru_maxrss``: that keeps the high-water mark of the parent the
    process was forked from, across ``exec``.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def flusher(buffer: dict[str, Any], start: Any, out: Any) -> None:
    setup(buffer)
    from project_stats import tsdb

    tsdb.buffer_stats()  # connected before the clock starts
    start.wait()
    rows = 0
    while True:
        result = tsdb.flush()
        rows += result.rows
        if not result.rows and not result.busy:
            break
    out.put((rows, time.time(), peak_mb(os.getpid())))


def flush_with(buffer: dict[str, Any], flushers: int) -> tuple[int, float, float]:
    """Rows written, seconds, peak MB of the flushers that emptied the buffer."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(flushers + 1)
    out = context.Queue()
    processes = [
        context.Process(target=flusher, args=(buffer, start, out)) for _ in range(flushers)
    ]
    for process in processes:
        process.start()
    start.wait(timeout=120)
    began = time.time()
    results = [out.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return (
        sum(rows for rows, _, _ in results),
        max(end for _, end, _ in results) - began,
        max(mb for _, _, mb in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", type=int, nargs="+", default=[1000, 10_000])
    args = parser.parse_args()

    migrated(DATABASE)
    buffer = {"URL": REDIS_URL, "PREFIX": f"bench-flush-{uuid.uuid4().hex[:8]}", "SHARDS": 64}
    setup(buffer)
    from django.db import connection

    from project_stats import tsdb
    from project_stats.models import EventCount, Organization, Project

    org, _ = Organization.objects.get_or_create(slug="flush", defaults={"name": "Flush"})
    have = Project.objects.filter(organization=org).count()
    Project.objects.bulk_create(
        (
            Project(organization=org, slug=f"f{i}", name=f"F{i}")
            for i in range(have, max(args.projects))
        ),
        batch_size=5000,
    )
    all_ids = list(
        Project.objects.filter(organization=org).order_by("pk").values_list("pk", flat=True)
    )
    rows_out = []
    cases = [
        (shape, redis_only, count, flushers)
        for shape, redis_only in (("all stored", ()), ("10 s in Redis", None))
        for count in args.projects
        for flushers in (1, 2)
    ]
    for shape, redis_only, count, flushers in cases:
        config = {**buffer, "REDIS_ONLY_ROLLUPS": redis_only}
        setup(config)
        ids = all_ids[:count]
        EventCount.objects.filter(project_id__in=all_ids).delete()
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {EventCount._meta.db_table}")  # noqa: S608
        # A day boundary far from now's buckets, the same for every case.
        base = int(time.time()) // 86400 * 86400 - 86400 + 3600
        for name, seconds in (
            ("first (inserts)", [base]),
            ("one 10 s bucket (5 s interval)", [base + 10]),
            ("six 10 s buckets (60 s interval)", [base + 20 + 10 * i for i in range(6)]),
        ):
            tsdb.incr_many([(pk, stat, s, 1) for pk in ids for stat in STATS for s in seconds])
            rows, wall, peak = flush_with(config, flushers)
            rows_out.append(
                (
                    shape,
                    f"{count:,}",
                    name,
                    flushers,
                    f"{rows:,}",
                    f"{wall:.2f}",
                    f"{rows / wall:,.0f}" if wall else "-",
                    f"{peak:.0f}",
                )
            )
            print(" | ".join(str(c) for c in rows_out[-1]), file=sys.stderr)
    print("### Flushes of many active series (2 stats per project)\n")
    print(
        table(
            [
                "rollups",
                "active projects",
                "flush",
                "flushers",
                "rows",
                "seconds",
                "rows/s",
                "peak MB",
            ],
            rows_out,
        )
    )


if __name__ == "__main__":
    main()
