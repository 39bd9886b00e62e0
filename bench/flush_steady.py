"""Benchmark: do the flushers keep up with many active series under steady load?

``--series`` active series (projects x 2 stats, on PostgreSQL
``project_stats_bench_flush`` and the Redis at ``BENCH_REDIS_URL``) each get
an increment every ``--interval`` seconds, at the current time, from
``--writers`` processes pacing their writes evenly over the interval, while
``--flushers`` processes run ``project_stats_flush --loop --interval``. For
``--seconds`` (default 300) the script samples every second the age of the
oldest buffered delta (the flush lag) and prints it per minute: kept up
with means the lag stays bounded instead of growing. Also printed: the rows
PostgreSQL took per second, the flushers' peak memory (``VmHWM``), Redis's
memory, and whether the writers kept their pace.

``--memory-series N ...`` (default 10,000 and 250,000; none skips it)
measures first Redis's memory per active series: with one bucket, and per
further 10 s bucket held over ``--memory-buckets`` (default 30) of them,
from which an hour (the Redis-only rollup's full retention) follows. Above
Redis's ``hash-max-listpack-entries`` fields per shard and bucket, the hashes
turn from listpacks into hash tables, several times larger.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import migrated, table  # noqa: E402
from bench.flush_scale import DATABASE, REDIS_URL, STATS, peak_mb, setup  # noqa: E402


def writer(
    buffer: dict[str, Any], ids: list[int], interval: float, stop_at: float, out: Any
) -> None:
    """One increment per series and interval, in chunks spread over the interval."""
    setup(buffer)
    from project_stats import tsdb

    series = [(pk, stat) for pk in ids for stat in STATS]
    chunk = 5000
    rounds = late = events = failed = 0
    while time.time() < stop_at:
        began = time.monotonic()
        for offset in range(0, len(series), chunk):
            now = time.time()
            part = series[offset : offset + chunk]
            try:
                tsdb.incr_many([(pk, stat, now, 1) for pk, stat in part])
                events += len(part)
            except tsdb.BufferUnavailable:
                failed += len(part)
            pause = began + interval * (offset + len(part)) / len(series) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        rounds += 1
        if time.monotonic() - began > interval * 1.05:
            late += 1
    out.put((rounds, late, events, failed))


def flusher(buffer: dict[str, Any], interval: float) -> None:
    setup(buffer)
    from django.core.management import call_command

    call_command("project_stats_flush", loop=True, interval=interval, verbosity=0)


def redis_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def memory_per_series(
    buffer: dict[str, Any], ids: list[int], client: Any, buckets: int
) -> list[str]:
    """Redis bytes per active series: the live hash, and each 10 s bucket held."""
    from project_stats import tsdb

    prefix = f"{buffer['PREFIX']}-memory"
    setup({**buffer, "PREFIX": prefix})
    series = len(ids) * len(STATS)
    now = int(time.time()) // 10 * 10
    before = redis_memory(client)
    tsdb.incr_many([(pk, stat, now, 1) for pk in ids for stat in STATS])
    one = redis_memory(client) - before
    for step in range(1, buckets):
        tsdb.incr_many([(pk, stat, now - 10 * step, 1) for pk in ids for stat in STATS])
    held = redis_memory(client) - before
    per_bucket = (held - one) / (buckets - 1) / series
    key = next(client.scan_iter(match=f"{{{prefix}:*}}:r:10:*", count=1000), None)
    encoding = client.object("encoding", key).decode() if key else "-"
    for name in client.scan_iter(match=f"{{{prefix}:*", count=1000):
        client.delete(name)
    setup(buffer)
    return [
        f"{series:,}",
        f"{one / series:.0f}",
        f"{per_bucket:.1f}",
        encoding,
        f"{(one + 359 * per_bucket * series) / series / 1024:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=250_000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--flushers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--redis-only", choices=("default", "none"), default="default")
    parser.add_argument("--memory-series", type=int, nargs="*", default=[10_000, 250_000])
    parser.add_argument("--memory-buckets", type=int, default=30)
    args = parser.parse_args()

    migrated(DATABASE)
    buffer = {
        "URL": REDIS_URL,
        "PREFIX": f"bench-steady-{uuid.uuid4().hex[:8]}",
        "SHARDS": 64,
        "REDIS_ONLY_ROLLUPS": None if args.redis_only == "default" else (),
    }
    setup(buffer)
    import redis
    from django.db import connection

    from project_stats import tsdb
    from project_stats.models import EventCount, Organization, Project

    client = redis.Redis.from_url(REDIS_URL)
    most = max([args.series, *args.memory_series])
    projects = (most + len(STATS) - 1) // len(STATS)
    org, _ = Organization.objects.get_or_create(slug="flush", defaults={"name": "Flush"})
    have = Project.objects.filter(organization=org).count()
    Project.objects.bulk_create(
        (Project(organization=org, slug=f"f{i}", name=f"F{i}") for i in range(have, projects)),
        batch_size=5000,
    )
    all_ids = list(
        Project.objects.filter(organization=org).order_by("pk").values_list("pk", flat=True)
    )[:projects]
    ids = all_ids[: (args.series + len(STATS) - 1) // len(STATS)]
    report: list[str] = []
    if args.memory_series:
        rows = [
            memory_per_series(buffer, all_ids[: count // len(STATS)], client, args.memory_buckets)
            for count in args.memory_series
        ]
        report += [
            "### Redis memory per active series (64 shards; an hour is 360 10 s buckets)\n",
            table(
                [
                    "active series",
                    "bytes, one bucket (live hash + one 10 s bucket)",
                    "bytes per further 10 s bucket",
                    "10 s hash encoding",
                    "KB with an hour held",
                ],
                rows,
            ),
            "",
        ]

    if args.seconds <= 0 or not ids:
        print("\n".join(report))
        return
    table_name = EventCount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table_name}")  # noqa: S608 - the benchmark's own database
    # The first flush of every series inserts its rows; the load then updates them.
    tsdb.incr_many([(pk, stat, time.time(), 1) for pk in ids for stat in STATS])
    while tsdb.flush().rows:
        pass
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table_name}")  # noqa: S608

    def written() -> tuple[int, int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute(
                "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = %s",
                [table_name],
            )
            ins, upd, hot = cursor.fetchone()
        connection.close()  # a fresh snapshot of the statistics next time
        return int(ins), int(upd), int(hot)

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    stop_at = time.time() + args.seconds
    slices = [ids[i :: args.writers] for i in range(args.writers)]
    writers = [
        context.Process(target=writer, args=(buffer, part, args.interval, stop_at, out))
        for part in slices
    ]
    flushers = [
        context.Process(target=flusher, args=(buffer, args.interval)) for _ in range(args.flushers)
    ]
    memory_before = redis_memory(client)
    counts_before = written()
    began = time.time()
    for process in writers + flushers:
        process.start()
    samples: list[tuple[float, float, int, int]] = []
    flushes: dict[tuple[int, float], tuple[float, int]] = {}
    peaks = [0.0] * len(flushers)
    while time.time() < stop_at:
        time.sleep(1.0)
        shards = tsdb.buffer_stats()
        oldest = [s.oldest for s in shards if s.oldest is not None]
        samples.append(
            (
                time.time() - began,
                max(oldest) if oldest else 0.0,
                sum(s.fields for s in shards),
                sum(s.batches for s in shards),
            )
        )
        for s in shards:
            if s.flushed_at is not None and s.flushed_at >= began:
                flushes[(s.shard, s.flushed_at)] = (s.flush_seconds or 0.0, s.flush_rows or 0)
        for i, process in enumerate(flushers):
            if process.pid is not None and process.is_alive():
                peaks[i] = max(peaks[i], peak_mb(process.pid))
    elapsed = time.time() - began
    counts_after = written()
    memory_after = redis_memory(client)
    results = [out.get(timeout=600) for _ in writers]
    for process in writers:
        process.join(timeout=60)
    for process in flushers:
        if process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in flushers:
        process.join(timeout=600)

    per_minute: list[list[str]] = []
    for minute in range(0, int(elapsed + 59) // 60):
        part = [s for s in samples if minute * 60 <= s[0] < (minute + 1) * 60]
        if not part:
            continue
        lags = sorted(s[1] for s in part)
        per_minute.append(
            [
                str(minute + 1),
                f"{statistics.median(lags):.1f}",
                f"{lags[int(0.99 * (len(lags) - 1))]:.1f}",
                f"{lags[-1]:.1f}",
                f"{max(s[2] for s in part):,}",
                str(max(s[3] for s in part)),
            ]
        )
    ins = counts_after[0] - counts_before[0]
    upd = counts_after[1] - counts_before[1]
    hot = counts_after[2] - counts_before[2]
    rounds = sum(r[0] for r in results)
    late = sum(r[1] for r in results)
    events = sum(r[2] for r in results)
    failed = sum(r[3] for r in results)
    claim_seconds = [seconds for seconds, _ in flushes.values()]
    shape = "10 s in Redis" if args.redis_only == "default" else "all stored"
    report += [
        f"### Steady load: {args.series:,} active series, {shape}, one increment per series "
        f"every {args.interval:g} s, {args.writers} writer(s), {args.flushers} flusher(s), "
        f"{elapsed:.0f} s\n",
        table(
            ["minute", "lag median s", "lag p99 s", "lag max s", "fields buffered", "batches"],
            per_minute,
        ),
        "",
        table(
            ["figure", "value"],
            [
                ["events written", f"{events:,} ({events / elapsed:,.0f}/s; {failed:,} refused)"],
                ["writer rounds late (over 1.05 x interval)", f"{late} of {rounds}"],
                [
                    "rows written to PostgreSQL",
                    f"{ins:,} inserted, {upd:,} updated ({hot:,} HOT); "
                    f"{(ins + upd) / elapsed:,.0f}/s",
                ],
                [
                    "claim flush seconds (median, max)",
                    f"{statistics.median(claim_seconds):.2f}, {max(claim_seconds):.2f}"
                    if claim_seconds
                    else "-",
                ],
                ["flusher peak memory MB", ", ".join(f"{p:.0f}" for p in peaks)],
                ["Redis memory growth MB", f"{(memory_after - memory_before) / 2**20:,.0f}"],
            ],
        ),
    ]
    for key in client.scan_iter(match=f"{{{buffer['PREFIX']}:*", count=1000):
        client.delete(key)
    print("\n".join(report))


if __name__ == "__main__":
    main()
