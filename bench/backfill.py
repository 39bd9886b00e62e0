"""Benchmark: ``tsdb.backfill`` against one hand-written statement on the same data.

Fills the PostgreSQL database of ``DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/project_stats_bench``, created if missing)
with 10-second rows over the closed hours before the current one, copies them
to a scratch table with the same indexes, then rebuilds the hourly rollup
twice: by ``tsdb.backfill`` on the real table and by one ``INSERT ... SELECT
... GROUP BY ... ON CONFLICT`` on the copy, over the same range. Both start
from no hourly rows ("build") and then run again on their own output
("re-run"). Finally the management command runs in a child process whose
peak RSS is reported, next to a child that only starts Django.

Run with ``make bench-backfill``; options: ``--projects`` (4 series each) and
``--hours`` (360 rows per series per hour), ``--repeat``. The project_stats
tables of that database are emptied first: it refuses a database holding
organizations other than its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.settings import DEFAULT_DATABASE_URL  # noqa: E402

BENCH_ORG = "project-stats-bench"
TABLE = "project_stats_eventcount"
SERIES = "(VALUES (0, ''), (3, ''), (3, 'production'), (3, 'staging')) AS s(stat, env)"
HANDWRITTEN = """
INSERT INTO bench_scratch (project_id, stat, environment, rollup, "timestamp", count)
SELECT project_id, stat, environment, 3600,
       date_bin(interval '1 hour', "timestamp", TIMESTAMPTZ '1970-01-01 00:00:00+00'),
       sum(count)
FROM bench_scratch
WHERE rollup = 10 AND "timestamp" >= %(since)s AND "timestamp" < %(until)s
GROUP BY project_id, stat, environment, 5
ON CONFLICT (project_id, stat, rollup, environment, "timestamp")
DO UPDATE SET count = GREATEST(bench_scratch.count, EXCLUDED.count)
WHERE bench_scratch.count < EXCLUDED.count
"""


def ensure_database(url: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(url.replace("postgres://", "postgresql://", 1))
    name = info.pop("dbname")
    info["dbname"] = "postgres"
    with psycopg.connect(**info, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def run_sql(sql: str, params: Any = None) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    return time.perf_counter() - started


def fetch(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def fill(projects: int, hours: int, now: datetime) -> tuple[datetime, datetime, int]:
    from django.db import connection

    from project_stats.models import Organization
    from project_stats.tsdb.rollups import bucket_start, epoch_to_datetime

    others = Organization.objects.exclude(slug=BENCH_ORG)
    if others.exists():
        sys.exit(
            f"refusing: this database holds organizations other than {BENCH_ORG!r}; "
            "point DATABASE_URL at a dedicated database"
        )
    run_sql("DROP TABLE IF EXISTS bench_scratch")
    run_sql(
        "TRUNCATE project_stats_eventcount, project_stats_project, project_stats_organization "
        "RESTART IDENTITY CASCADE"
    )
    org = Organization.objects.create(slug=BENCH_ORG, name="Bench")
    run_sql(
        "INSERT INTO project_stats_project (organization_id, slug, name, date_added) "
        "SELECT %s, 'p' || i, 'P ' || i, now() FROM generate_series(1, %s) AS i",
        [org.pk, projects],
    )
    until = epoch_to_datetime(bucket_start(now, 3600))
    since = epoch_to_datetime(bucket_start(now, 3600) - hours * 3600)
    started = time.perf_counter()
    run_sql("SET maintenance_work_mem = '512MB'")
    # Indexes and the (deferred) foreign key are built once after the load,
    # not maintained row by row: minutes become seconds.
    constraints = fetch(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('u', 'f')",
        [TABLE],
    )
    indexes = fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        [TABLE, TABLE],
    )
    try:
        for name, _ in constraints:
            run_sql(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            run_sql(f'DROP INDEX "{name}"')
        run_sql(
            f'INSERT INTO {TABLE} (project_id, stat, environment, rollup, "timestamp", count) '
            "SELECT p.id, s.stat, s.env, 10, %s + b * interval '10 seconds', "
            "1 + (p.id * 7 + b) %% 5 "
            f"FROM project_stats_project p CROSS JOIN {SERIES} "
            # In time order, as live traffic writes them.
            "CROSS JOIN generate_series(0, %s - 1) AS b ORDER BY b, 1, 2, 3",
            [since, hours * 360],
        )
    finally:
        for name, definition in constraints:
            run_sql(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            run_sql(definition)
    # The scratch copy: same rows in the same physical order, same indexes.
    run_sql(
        f"CREATE TABLE bench_scratch (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING IDENTITY); "
        f"INSERT INTO bench_scratch SELECT * FROM {TABLE} ORDER BY id; "
        "SELECT setval(pg_get_serial_sequence('bench_scratch', 'id'), max(id)) FROM bench_scratch"
    )
    for name, definition in fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [TABLE]
    ):
        run_sql(
            definition.replace(f"INDEX {name} ON", f"INDEX bench_{name} ON").replace(
                f".{TABLE} USING", ".bench_scratch USING"
            )
        )
    vacuum()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM project_stats_eventcount WHERE rollup = 10")
        (rows,) = cursor.fetchone()
    print(
        f"filled {rows:,} 10s rows ({projects * 4:,} series x {hours * 360} buckets) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return since, until, rows


def vacuum() -> None:
    for table in ("project_stats_eventcount", "bench_scratch"):
        run_sql(f"VACUUM ANALYZE {table}")


def reset_targets(*tables: str) -> None:
    for table in tables or ("project_stats_eventcount", "bench_scratch"):
        run_sql(f"DELETE FROM {table} WHERE rollup = 3600")
    vacuum()


def time_backfill(since: datetime, until: datetime, now: datetime) -> tuple[float, int]:
    from project_stats import tsdb

    started = time.perf_counter()
    [result] = tsdb.backfill([3600], since=since, until=until, now=now)
    return time.perf_counter() - started, result.written


def same_output() -> bool:
    from django.db import connection

    columns = 'project_id, stat, environment, rollup, "timestamp", count'
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM ((SELECT {columns} FROM project_stats_eventcount "
            f"EXCEPT SELECT {columns} FROM bench_scratch) UNION ALL "
            f"(SELECT {columns} FROM bench_scratch "
            f"EXCEPT SELECT {columns} FROM project_stats_eventcount)) AS d"
        )
        (differences,) = cursor.fetchone()
    return bool(differences == 0)


def child_rss(*args: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of ``python -m django ARGS`` in a child process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"},
        stdout=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status:
        sys.exit(f"python -m django {' '.join(args)} failed ({status})")
    assert child.stdout is not None
    print("   ", child.stdout.read().decode().strip().replace("\n", "\n    "))
    return elapsed, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=350)
    parser.add_argument("--hours", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    ensure_database(url)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    now = datetime.now(UTC)
    since, until, rows = fill(args.projects, args.hours, now)
    params = {"since": since, "until": until}

    results: dict[str, Any] = {"rows": rows, "since": since.isoformat(), "until": until.isoformat()}
    for scenario in ("build", "re-run"):
        sql_times, backfill_times = [], []
        for i in range(args.repeat):
            if scenario == "build":
                reset_targets()
            # Alternate who goes first so neither always gets the warmer cache.
            if i % 2:
                backfill_times.append(time_backfill(since, until, now)[0])
                sql_times.append(run_sql(HANDWRITTEN, params))
            else:
                sql_times.append(run_sql(HANDWRITTEN, params))
                backfill_times.append(time_backfill(since, until, now)[0])
            if scenario == "build" and i == 0 and not same_output():
                sys.exit("backfill and the hand-written statement disagree")
        sql_t, bf_t = statistics.median(sql_times), statistics.median(backfill_times)
        results[scenario] = {"sql_s": sql_t, "backfill_s": bf_t, "ratio": bf_t / sql_t}
        print(
            f"{scenario:>7}: hand-written SQL {sql_t:.2f}s, tsdb.backfill {bf_t:.2f}s, "
            f"ratio {bf_t / sql_t:.2f} (median of {args.repeat})"
        )

    reset_targets("project_stats_eventcount")
    print("command in a child process:")
    wall, rss = child_rss(
        "project_stats_backfill",
        "--rollup",
        "1h",
        "--since",
        since.isoformat(),
        "--until",
        until.isoformat(),
    )
    _, base_rss = child_rss("check")
    if not same_output():
        sys.exit("the command's output differs from the hand-written statement's")
    results["command"] = {
        "wall_s": wall,
        "peak_rss_mb": rss / 1024,
        "django_only_rss_mb": base_rss / 1024,
    }
    print(
        f"command: {wall:.2f}s wall, peak RSS {rss / 1024:.0f} MB "
        f"(a child that only runs `check`: {base_rss / 1024:.0f} MB)"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "backfill.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
