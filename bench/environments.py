"""Benchmark: the unknown-environment check on a 5-million-row table, and ingestion.

``stat=generated&environment=x`` first asks ``tsdb.environment_exists``
whether the organization ever recorded ``x``. This loads the HTTP read
benchmark's table (2,000 projects x 4 stats x every rollup's retention, about
4.9 million rows, all in the ``""`` total) into its own database, gives 100
projects a ``production`` series of ``generated``, and prints PostgreSQL's
plan (``EXPLAIN (ANALYZE, BUFFERS)``) of the statement the check runs, for an
environment the organization has and for one it has not. Then it times
``tsdb.incr_many`` batches of 1,000 events (100 projects, 4 stats, two
environments on ``generated``) on the same table, so the write cost of what
serves the check shows. Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.common import db_url, django_site, median, migrated, table  # noqa: E402
from bench.http_read import ORG, load  # noqa: E402

DATABASE = "project_stats_bench_env"
STATS = ("received", "rejected", "blacklisted", "generated")


def remove_environment_rows(database: str) -> None:
    """Back to the read benchmark's table, so that ``load`` finds it complete."""
    with psycopg.connect(db_url(database), autocommit=True) as conn:
        conn.execute("DELETE FROM project_stats_eventcount WHERE environment <> ''")


def add_environment_rows(database: str) -> None:
    """A ``production`` copy of ``generated`` for projects p1901..p2000."""
    with psycopg.connect(db_url(database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO project_stats_eventcount "
            "(project_id, stat, environment, rollup, timestamp, count) "
            "SELECT e.project_id, e.stat, 'production', e.rollup, e.timestamp, e.count "
            "FROM project_stats_eventcount e JOIN project_stats_project p ON p.id = e.project_id "
            "WHERE e.stat = 3 AND e.environment = '' "
            "AND p.slug IN (SELECT 'p' || g FROM generate_series(1901, 2000) g)"
        )
        conn.execute("VACUUM ANALYZE project_stats_eventcount")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=30, help="incr_many batches per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-plans", action="store_true", help="time ingestion only")
    args = parser.parse_args()

    migrated(DATABASE)
    remove_environment_rows(DATABASE)
    load(DATABASE, 2000, demo=False)
    add_environment_rows(DATABASE)
    django_site(DATABASE)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from project_stats import tsdb
    from project_stats.models import EventCount, Organization, Project

    organization = Organization.objects.get(slug=ORG)
    rows = EventCount.objects.count()
    if not args.no_plans:
        print(f"### The unknown-environment check ({rows:,} rows, 2,000 projects)\n")
    for environment in () if args.no_plans else ("production", "no-such-environment"):
        with CaptureQueriesContext(connection) as queries:
            found = tsdb.environment_exists(organization, environment)
        print(f"`environment_exists(organization, {environment!r})` -> {found}:\n")
        with connection.cursor() as cursor:
            for query in queries.captured_queries:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query['sql']}")
                plan = "\n".join(line for (line,) in cursor.fetchall())
                print(f"```\n{query['sql']}\n\n{plan}\n```\n")

    # Ingestion goes to another organization's projects, emptied before each
    # run, so the table above stays as loaded and each run inserts as much.
    ingest, _ = Organization.objects.get_or_create(slug="env-ingest", defaults={"name": "Ingest"})
    for i in range(Project.objects.filter(organization=ingest).count(), 100):
        Project.objects.create(organization=ingest, slug=f"p{i}", name=f"P{i}")
    projects = list(Project.objects.filter(organization=ingest).values_list("pk", flat=True))
    rng = random.Random(7)
    rates: list[float] = []
    base = time.time() - 3000
    for run in range(args.runs):
        tsdb.delete(projects)
        batches = [
            [
                tsdb.Increment(
                    rng.choice(projects),
                    stat,
                    base + 60 * (run * args.batches + b) + rng.random() * 60,
                    1,
                    rng.choice(("production", "staging")) if stat == "generated" else None,
                )
                for stat in (rng.choice(STATS) for _ in range(1000))
            ]
            for b in range(args.batches)
        ]
        started = time.perf_counter()
        for items in batches:
            tsdb.incr_many(items)
        rates.append(1000 * args.batches / (time.perf_counter() - started))
    connection.close()
    print(f"### `tsdb.incr_many` into that table (median of {args.runs} runs)\n")
    print(table(["path", "events/s"], [["1,000-event batches", f"{median(rates):,.0f}"]]))


if __name__ == "__main__":
    main()
