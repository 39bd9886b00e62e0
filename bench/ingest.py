"""Benchmark: ingestion through ``tsdb.incr`` and ``tsdb.incr_many`` on PostgreSQL.

``incr``: one call per event. ``incr_many``: batches of 1,000 events spread
over 100 projects and 4 stats within one minute. The floor writes the same
final rows as each ``incr_many`` batch with one hand-written multi-row
``INSERT ... ON CONFLICT DO UPDATE`` through psycopg, its rows aggregated
beforehand, outside the timing. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import db_url, django_site, median, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_ingest"
STATS = ("received", "rejected", "blacklisted", "generated")
STAT_CODES = {"received": 0, "rejected": 1, "blacklisted": 2, "generated": 3}
ROLLUPS = (10, 3600, 86400)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000, help="incr calls per run")
    parser.add_argument("--batches", type=int, default=40, help="incr_many batches per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    migrated(DATABASE)
    django_site(DATABASE)
    import psycopg
    from django.db import connection

    from project_stats import tsdb
    from project_stats.models import EventCount, Organization, Project

    org, _ = Organization.objects.get_or_create(slug="ingest", defaults={"name": "Ingest"})
    projects = list(Project.objects.filter(organization=org).order_by("pk")[:100])
    for i in range(len(projects), 100):
        projects.append(Project.objects.create(organization=org, slug=f"p{i}", name=f"P{i}"))
    ids = [p.pk for p in projects]
    rng = random.Random(7)

    def batch(minute_start: float) -> list[tuple[int, str, float, int]]:
        return [
            (rng.choice(ids), rng.choice(STATS), minute_start + rng.random() * 60, 1)
            for _ in range(1000)
        ]

    def final_rows(events: list[tuple[int, str, float, int]]) -> list[tuple]:
        totals: Counter[tuple[int, int, int, int]] = Counter()
        for pk, stat, ts, count in events:
            for r in ROLLUPS:
                second = int(ts)
                totals[(pk, STAT_CODES[stat], r, second - second % r)] += count
        return [(pk, s, "", r, b, c) for (pk, s, r, b), c in sorted(totals.items())]

    floor_sql = (
        "INSERT INTO project_stats_eventcount "
        "(project_id, stat, environment, rollup, timestamp, count) VALUES {} "
        "ON CONFLICT (project_id, stat, rollup, environment, timestamp) "
        "DO UPDATE SET count = project_stats_eventcount.count + EXCLUDED.count"
    )
    results: dict[str, list[float]] = {"incr": [], "incr_many": [], "floor": []}
    start = time.time() - 3000
    with psycopg.connect(db_url(DATABASE), autocommit=True) as raw:
        for run in range(args.runs):
            EventCount.objects.filter(project__organization=org).delete()
            t = time.perf_counter()
            for i in range(args.events):
                tsdb.incr(ids[i % 100], STATS[i % 4], timestamp=start + run * 60 + i * 0.01)
            results["incr"].append(args.events / (time.perf_counter() - t))

            batches = [batch(start + 600 + 60 * (b % 30)) for b in range(args.batches)]
            t = time.perf_counter()
            for events in batches:
                tsdb.incr_many(events)
            results["incr_many"].append(1000 * args.batches / (time.perf_counter() - t))

            prepared = [final_rows(events) for events in batches]
            elapsed = 0.0
            for rows in prepared:
                values = ",".join(["(%s, %s, %s, %s, to_timestamp(%s), %s)"] * len(rows))
                params = [v for row in rows for v in row]
                t = time.perf_counter()
                raw.execute(floor_sql.format(values), params)
                elapsed += time.perf_counter() - t
            results["floor"].append(1000 * args.batches / elapsed)
    connection.close()

    incr, many, floor = (median(results[k]) for k in ("incr", "incr_many", "floor"))
    print(f"### Ingestion on PostgreSQL (median of {args.runs} runs)\n")
    print(
        table(
            ["path", "events/s", "vs floor"],
            [
                ["`tsdb.incr`, one call per event", f"{incr:,.0f}", ""],
                ["`tsdb.incr_many`, 1,000-event batches", f"{many:,.0f}", f"{many / floor:.2f}x"],
                ["floor: hand-written multi-row upsert", f"{floor:,.0f}", "1.00x"],
            ],
        )
    )


if __name__ == "__main__":
    main()
