"""Benchmark: the Redis write buffer against writing straight to PostgreSQL.

In one run, on PostgreSQL ``project_stats_bench_buf`` and the Redis at
``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``, keys under a
prefix of this run, deleted at the end):

- ``tsdb.incr`` calls/s from one process, buffered and direct;
- ``tsdb.incr_many`` events/s (1,000-event batches over 1,000 projects), both ways;
- sustained ingestion: 4 writer processes (1,000-event batches, 1,000
  projects) and one ``flush`` loop for ``--seconds``, then the same writers
  straight to PostgreSQL for as long; events/s recorded (flushed) and the
  flush lag (age of the oldest increment at its commit);
- the default stats request (24 hourly points, through Django's test client
  and the whole DRF stack) with and without the buffer;
- Redis memory per buffered project.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import django_site, median, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_buf"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
STATS = ("received", "rejected", "blacklisted", "generated")
PROJECTS = 1000
WRITERS = 4


def setup(buffer: dict[str, Any] | None) -> None:
    django_site(DATABASE)
    from django.conf import settings

    settings.PROJECT_STATS = {} if buffer is None else {"BUFFER": buffer}


def batch(rng: random.Random, ids: list[int], now: float) -> list[tuple[int, str, float, int]]:
    """1,000 events of the last second, as live ingestion sends them."""
    return [(rng.choice(ids), rng.choice(STATS), now - rng.random(), 1) for _ in range(1000)]


def big_batch(
    rng: random.Random, ids: list[int], now: float, kind: str
) -> list[tuple[int, str, Any, int, str | None]]:
    """10,000 events of the last second, half with an environment."""
    events: list[tuple[int, str, Any, int, str | None]] = []
    for i in range(10_000):
        second = now - rng.random()
        moment: Any = second if kind == "float" else datetime.fromtimestamp(second, UTC)
        events.append((rng.choice(ids), STATS[i % 4], moment, 1, "prod" if i % 2 else None))
    return events


def writer(
    buffer: dict[str, Any] | None, ids: list[int], seed: int, until: float, out: Any
) -> None:
    setup(buffer)
    from project_stats import tsdb

    rng = random.Random(seed)
    events = 0
    while time.time() < until:
        tsdb.incr_many(batch(rng, ids, time.time()))
        events += 1000
    out.put(events)


def flusher(buffer: dict[str, Any], interval: float, until: float, out: Any) -> None:
    setup(buffer)
    from project_stats import tsdb

    lags: list[float] = []
    rows = 0
    while True:
        started = time.monotonic()
        result = tsdb.flush()
        rows += result.rows
        if result.lag is not None:
            lags.append(result.lag)
        if time.time() >= until and result.rows == 0:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    out.put((lags, rows, time.time()))


def sustained(
    buffer: dict[str, Any] | None, ids: list[int], seconds: float, interval: float
) -> tuple[float, list[float]]:
    """Events/s recorded (flushed, with a buffer) and the flush lags."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    lag_out = context.Queue()
    begin = time.time() + 3  # the children's setup is not timed
    until = begin + seconds
    writers = [
        context.Process(target=writer, args=(buffer, ids, seed, until, out))
        for seed in range(WRITERS)
    ]
    flush = (
        [context.Process(target=flusher, args=(buffer, interval, until, lag_out))] if buffer else []
    )
    for process in writers + flush:
        process.start()
    events = sum(out.get(timeout=seconds + 120) for _ in writers)
    end = until
    lags: list[float] = []
    if flush:
        lags, _rows, end = lag_out.get(timeout=seconds + 300)
    for process in writers + flush:
        process.join(timeout=60)
    return events / (end - begin), lags


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="sustained ingestion time")
    parser.add_argument("--interval", type=float, default=5.0, help="flush interval (seconds)")
    parser.add_argument("--calls", type=int, default=5000, help="incr calls per measure")
    args = parser.parse_args()

    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        print(f"### The Redis write buffer\n\nSkipped: no Redis answers at {REDIS_URL}.")
        return
    migrated(DATABASE)
    buffer = {"URL": REDIS_URL, "PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "SHARDS": 64}
    setup(None)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from project_stats import tsdb
    from project_stats.models import ApiToken, EventCount, Organization, Project

    org, _ = Organization.objects.get_or_create(slug="buf", defaults={"name": "Buffer"})
    have = Project.objects.filter(organization=org).count()
    Project.objects.bulk_create(
        Project(organization=org, slug=f"p{i}", name=f"P{i}") for i in range(have, PROJECTS)
    )
    ids = list(Project.objects.filter(organization=org).values_list("pk", flat=True))
    EventCount.objects.filter(project__organization=org).delete()
    rng = random.Random(7)

    def use(value: dict[str, Any] | None) -> None:
        settings.PROJECT_STATS = {} if value is None else {"BUFFER": value}

    rates: dict[str, float] = {}
    use(buffer)
    tsdb.incr(ids[0], "received")  # imports and connects outside the timing
    for name, value in (("direct", None), ("buffer", buffer)):
        use(value)
        now = time.time()
        t = time.perf_counter()
        for i in range(args.calls):
            tsdb.incr(ids[i % PROJECTS], STATS[i % 4], timestamp=now)
        rates[f"incr {name}"] = args.calls / (time.perf_counter() - t)
        batches = [batch(rng, ids, now) for _ in range(20)]
        t = time.perf_counter()
        for events in batches:
            tsdb.incr_many(events)
        rates[f"incr_many {name}"] = 20_000 / (time.perf_counter() - t)
        # Large batches: 10,000 events over 100 projects, 4 stats, half with
        # an environment, timestamps as floats and as datetimes.
        for kind in ("float", "datetime"):
            large = [big_batch(rng, ids[:100], now, kind) for _ in range(5)]
            t = time.perf_counter()
            for events in large:
                tsdb.incr_many(events)
            rates[f"incr_many large {kind} {name}"] = 50_000 / (time.perf_counter() - t)
    use(buffer)
    tsdb.flush()

    # Redis memory per buffered project: one minute of events of 4 stats.
    client = redis.Redis.from_url(REDIS_URL)
    before = int(client.info("memory")["used_memory"])
    now = time.time()
    tsdb.incr_many(
        [(pk, stat, now - s, 1) for pk in ids for stat in STATS for s in range(0, 60, 10)]
    )
    per_project = (int(client.info("memory")["used_memory"]) - before) / len(ids)
    fields = sum(
        client.hlen(k)
        for k in client.scan_iter(match="{" + buffer["PREFIX"] + ":*:live")
        if client.type(k) == b"hash"
    )
    tsdb.flush()

    # The default request, with and without the buffer (something buffered).
    user, _ = get_user_model().objects.get_or_create(username="bench-buffer")
    from project_stats.models import OrganizationMember

    OrganizationMember.objects.get_or_create(organization=org, user=user)
    _, plaintext = ApiToken.objects.issue(user, name="bench")
    project = Project.objects.get(pk=ids[0])
    path = reverse(
        "project_stats:project-stats",
        kwargs={"organization_id_or_slug": org.slug, "project_id_or_slug": project.slug},
    )
    http = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    latency: dict[str, float] = {}
    for name, value in (("direct", None), ("buffer", buffer), ("direct ", None)):
        use(value)
        tsdb.incr(project, "received")
        samples = []
        for _ in range(300):
            t = time.perf_counter()
            response = http.get(path)
            samples.append(time.perf_counter() - t)
            assert response.status_code == 200, response.content
        latency[name.strip()] = min(latency.get(name.strip(), 1e9), statistics.median(samples))
    use(buffer)
    tsdb.flush()
    connection.close()

    direct_rate, _ = sustained(None, ids, args.seconds, args.interval)
    buffered_rate, lags = sustained(buffer, ids, args.seconds, args.interval)

    for key in client.scan_iter(match="{" + buffer["PREFIX"] + ":*"):
        client.delete(key)

    print("### The Redis write buffer (one Redis, PostgreSQL behind it)\n")
    print(
        table(
            ["measure", "direct to PostgreSQL", "with the buffer", "ratio"],
            [
                [
                    "`tsdb.incr`, calls/s, one process",
                    f"{rates['incr direct']:,.0f}",
                    f"{rates['incr buffer']:,.0f}",
                    f"{rates['incr buffer'] / rates['incr direct']:.1f}x",
                ],
                *(
                    [
                        f"`tsdb.incr_many`, events/s, 10,000-event batches over 100 projects, "
                        f"half with an environment, {kind} timestamps",
                        f"{rates[f'incr_many large {kind} direct']:,.0f}",
                        f"{rates[f'incr_many large {kind} buffer']:,.0f}",
                        f"{rates[f'incr_many large {kind} buffer'] / rates[f'incr_many large {kind} direct']:.1f}x",  # noqa: E501
                    ]
                    for kind in ("float", "datetime")
                ),
                [
                    "`tsdb.incr_many`, events/s, 1,000-event batches",
                    f"{rates['incr_many direct']:,.0f}",
                    f"{rates['incr_many buffer']:,.0f}",
                    f"{rates['incr_many buffer'] / rates['incr_many direct']:.1f}x",
                ],
                [
                    f"sustained {args.seconds:.0f} s, {WRITERS} writers, {PROJECTS:,} projects, "
                    "events/s recorded",
                    f"{direct_rate:,.0f}",
                    f"{buffered_rate:,.0f}",
                    f"{buffered_rate / direct_rate:.1f}x",
                ],
                [
                    "default stats request, median ms (test client, whole stack)",
                    f"{latency['direct'] * 1000:.2f}",
                    f"{latency['buffer'] * 1000:.2f}",
                    f"{latency['buffer'] / latency['direct']:.2f}x",
                ],
            ],
        )
    )
    print(
        f"\nFlush every {args.interval:g} s: {len(lags)} flushes moved data; lag (age of the "
        f"oldest increment at its commit) median {median(lags):.2f} s, p99 "
        f"{percentile(lags, 0.99):.2f} s, max {max(lags, default=float('nan')):.2f} s."
    )
    print(
        f"\nRedis memory: {per_project:,.0f} bytes per project holding one minute of 4 stats "
        f"({fields / len(ids):.0f} hash fields per project, "
        f"{per_project / max(1.0, fields / len(ids)):.0f} bytes per field)."
    )


if __name__ == "__main__":
    main()
