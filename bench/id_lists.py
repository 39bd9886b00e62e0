"""Benchmark: id lists as one parameter: plans, times and prepared statements.

Measures the statements of the tree it runs in (``project_stats`` is imported
from this checkout), so running it in two checkouts compares them.

PostgreSQL, database ``project_stats_bench_ids`` (dropped and made afresh):
``manage.py migrate`` with autovacuum off on its tables, ``project_stats_demo
--days 30``, then 70,000 more projects in the demo organization (one INSERT),
and no ANALYZE: the planner has no statistics, as on a new site. For each
statement, ``EXPLAIN (ANALYZE, SUMMARY)`` with the values (a custom plan) and
of the prepared statement with ``plan_cache_mode = force_generic_plan`` (the
plan PostgreSQL may keep after five runs): planning and execution ms, and how
the counts table is read. The statements:

- ``access``: the access statement of a project's stats (the default query);
- ``access ids=N``: the organization stats' access statement with ``projectID``
  N ids (one project of the organization counts, the others are new projects);
- ``read_cells ids=N``: the database half of a buffered organization read
  (``stats_v2``'s stats, one day at 1 h), N project ids and 3 batch ids, and
  70,000 of each.

Then the prepared statements one connection holds after reading 1 to 40 ids,
and its backend's memory (``pg_backend_memory_contexts``).

SQLite (``--sqlite``): a migrated file with the same data; ``read_cells``'s
statement timed with the ids as one variable each (``IN (?, ...)``), as
``IN (SELECT value FROM json_each(?))`` and as a join on ``json_each``.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import PYTHON, db_url, ensure_database, table  # noqa: E402

DATABASE = "project_stats_bench_ids"
EXTRA_PROJECTS = 70_000
SIZES = (3, 60_000, 70_000)


def fresh_postgres() -> None:
    with psycopg.connect(db_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    ensure_database(DATABASE)


def manage(database_url: str, *args: str) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.site_settings",
        "BENCH_DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True)


def load(database_url: str) -> None:
    """migrate (autovacuum off on the new tables), then the demo's 30 days."""
    manage(database_url, "migrate", "--noinput", "-v", "0")
    if database_url.startswith("postgres"):
        with psycopg.connect(database_url, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'project_stats_%'"
            ).fetchall():
                conn.execute(f'ALTER TABLE "{name}" SET (autovacuum_enabled = false)')
    manage(database_url, "project_stats_demo", "--days", "30", "--password", "bench-only")


def setup_django(database_url: str) -> None:
    os.environ.update(DJANGO_SETTINGS_MODULE="bench.site_settings", BENCH_DATABASE_URL=database_url)
    import django

    django.setup()


def add_projects() -> list[int]:
    from django.db import connection
    from django.utils import timezone

    from project_stats import demo
    from project_stats.models import Organization, Project

    org = Organization.objects.get(slug=demo.ORGANIZATION_SLUG)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO project_stats_project (organization_id, slug, name, date_added) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            "SELECT %s, 'bulk-' || i, 'Bulk ' || i, %s FROM n",
            [EXTRA_PROJECTS, org.pk, connection.ops.adapt_datetimefield_value(timezone.now())],
        )
    return list(
        Project.objects.filter(organization=org).order_by("pk").values_list("pk", flat=True)
    )


def _as_prepared(sql: str) -> str:
    parts = sql.split("%s")
    text = parts[0]
    for number, part in enumerate(parts[1:], start=1):
        text += f"${number}{part}"
    return text.replace("%%", "%")


def _indexes(plan: dict[str, Any]) -> list[str]:
    """The index names of a node and its children (a bitmap scan's are below it)."""
    names = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", ()):
        names += _indexes(child)
    return names


def _scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Relation Name") == "project_stats_eventcount":
        found.append(f"{plan['Node Type']} {' '.join(_indexes(plan))}".strip())
    for child in plan.get("Plans", ()):
        found += _scans(child)
    return found


def explain(sql: str, params: list[Any], generic: bool) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        if generic:
            cursor.execute(
                "SELECT name FROM pg_prepared_statements WHERE statement = %s",
                [_as_prepared(sql)],
            )
            (name,) = cursor.fetchone()
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            marks = ", ".join(["%s"] * len(params))
            cursor.execute(
                f"EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) EXECUTE {name}({marks})", params
            )
            (plan,) = cursor.fetchone()
            cursor.execute("RESET plan_cache_mode")
        else:
            cursor.execute("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + sql, params)
            (plan,) = cursor.fetchone()
    if isinstance(plan, str):
        plan = json.loads(plan)
    top = plan[0]
    return {
        "planning": top["Planning Time"],
        "execution": top["Execution Time"],
        "scans": ", ".join(sorted(set(_scans(top["Plan"])))) or "-",
    }


def capture(run: Any) -> tuple[str, list[Any]]:
    """The last statement ``run`` sends, with its parameters (``run`` called 6 times)."""
    from django.db import connection

    seen: list[tuple[str, list[Any]]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        for _ in range(6):
            run()
    return seen[-1]


def postgres(args: argparse.Namespace) -> None:
    url = db_url(DATABASE)
    if not args.reuse:
        fresh_postgres()
        load(url)
    setup_django(url)
    from django.db import connection
    from django.utils import timezone

    from project_stats import access, demo, tsdb, usage
    from project_stats.models import ApiToken, Organization, Project
    from project_stats.tsdb import database

    if args.reuse:
        ids = list(
            Project.objects.filter(organization__slug=demo.ORGANIZATION_SLUG)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    else:
        ids = add_projects()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, coalesce(last_analyze, last_autoanalyze) IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relname LIKE 'project_stats_%' ORDER BY 1"
        )
        analyzed = [name for name, done in cursor.fetchall() if done]
    print(
        f"PostgreSQL: {len(ids)} projects in the demo organization; tables analyzed: "
        f"{analyzed or 'none'}\n"
    )
    org = Organization.objects.get(slug=demo.ORGANIZATION_SLUG)
    token = ApiToken.objects.filter(user__username=demo.USERNAME).first()
    if token is None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username=demo.USERNAME)
        ApiToken.objects.issue(user, scopes=["org:read"])
        token = ApiToken.objects.filter(user=user).first()
    assert token is not None
    now = timezone.now()
    first_project = ids[0]
    day_end = int(now.timestamp()) // 3600 * 3600 - 3600
    stats = tsdb.plan_stats_range(usage.READ_STATS, day_end - 23 * 3600, day_end, rollup=3600)
    read = tsdb.plan_range("received", now.timestamp() - 86399, now.timestamp(), now=now)

    shapes: dict[str, Any] = {
        "access (project)": lambda: access.look_up(
            organization=org.slug,
            project=Project.objects.get(pk=first_project).slug,
            digest=token.digest,
            read=read,
            now=now,
        ),
    }
    for size in SIZES:
        chosen = ids[:size]
        shapes[f"access ids={size}"] = lambda chosen=chosen: access.look_up(
            organization=org.slug,
            digest=token.digest,
            read=read,
            project_ids=chosen,
            summed=True,
            now=now,
        )
        shapes[f"read_cells ids={size}"] = lambda chosen=chosen: database.read_cells(
            chosen, stats.stats, "", 3600, stats.first, stats.last, ["a", "b", "c"]
        )
    batches = [f"batch-{i}" for i in range(SIZES[-1])]
    shapes[f"read_cells ids={SIZES[-1]}, batch ids={SIZES[-1]}"] = lambda: database.read_cells(
        ids[: SIZES[-1]], stats.stats, "", 3600, stats.first, stats.last, batches
    )
    rows = []
    for name, run in shapes.items():
        try:
            started = time.perf_counter()
            run()
            wall = (time.perf_counter() - started) * 1000
            sql, params = capture(run)
        except Exception as error:  # noqa: BLE001 - the old tree fails past 65,535
            rows.append([name, "-", "-", "-", "-", "-", f"fails: {str(error)[:60]}"])
            connection.close()
            continue
        custom = explain(sql, params, generic=False)
        generic = explain(sql, params, generic=True)
        rows.append(
            [
                name,
                str(sql.count("%s")),
                f"{wall:.1f}",
                f"{custom['planning']:.2f} / {custom['execution']:.2f}",
                custom["scans"],
                f"{generic['planning']:.2f} / {generic['execution']:.2f}",
                generic["scans"],
            ]
        )
    print(
        table(
            [
                "statement",
                "parameters",
                "first run ms",
                "custom plan: planning / execution ms",
                "counts read by",
                "generic plan: planning / execution ms",
                "counts read by (generic)",
            ],
            rows,
        )
    )

    # Prepared statements and backend memory after reads of 1..40 ids.
    connection.close()
    connection.ensure_connection()

    def backend_bytes() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT sum(total_bytes) FROM pg_backend_memory_contexts")
            return int(cursor.fetchone()[0])

    database.read_cells(ids[:1], stats.stats, "", 3600, stats.first, stats.last, ["b"])
    before = backend_bytes()
    for size in range(1, 41):
        database.read_cells(
            ids[:size], stats.stats, "", 3600, stats.first, stats.last, ["b"] * size
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        (prepared_count,) = cursor.fetchone()
    grown = backend_bytes() - before
    print(
        f"\nAfter read_cells with 1 to 40 ids on one connection: {prepared_count} prepared "
        f"statement(s), backend memory grown by {grown / 1e6:.1f} MB.\n"
    )


def sqlite(args: argparse.Namespace) -> None:
    path = Path(tempfile.mkdtemp()) / "ids.sqlite3"
    url = f"sqlite:///{path}"
    load(url)
    setup_django(url)
    from django.db import connection

    from project_stats import tsdb, usage

    ids = add_projects()
    connection.close()
    raw = sqlite3.connect(path)
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 250_000)
    end = int(time.time()) // 3600 * 3600 - 3600
    stats = tsdb.plan_stats_range(usage.READ_STATS, end - 23 * 3600, end, rollup=3600)
    codes = list(stats.stats)
    start_text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stats.first))
    end_text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stats.last))
    tail = (
        " AND c.stat IN (SELECT value FROM json_each(?)) AND c.rollup = 3600 "
        "AND c.environment = '' AND c.timestamp >= ? AND c.timestamp <= ?"
    )
    select = "SELECT c.project_id, c.stat, c.timestamp, c.count FROM project_stats_eventcount c"
    forms = {
        "IN (?, ?, ...)": lambda n: (
            f"{select} WHERE c.project_id IN ({', '.join(['?'] * n)}){tail}",
            lambda chosen: [*chosen, json.dumps(codes), start_text, end_text],
        ),
        "IN (SELECT value FROM json_each(?))": lambda n: (
            f"{select} WHERE c.project_id IN (SELECT value FROM json_each(?)){tail}",
            lambda chosen: [json.dumps(chosen), json.dumps(codes), start_text, end_text],
        ),
        "JOIN json_each(?)": lambda n: (
            f"{select} JOIN json_each(?) j ON c.project_id = j.value WHERE 1 = 1{tail}",
            lambda chosen: [json.dumps(chosen), json.dumps(codes), start_text, end_text],
        ),
    }
    rows = []
    for size in (3, 1000, 30_000, 70_000):
        chosen = ids[:size]
        row = [str(size)]
        results = set()
        for make in forms.values():
            sql, bind = make(size)
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                found = raw.execute(sql, bind(chosen)).fetchall()
                times.append((time.perf_counter() - started) * 1000)
            results.add(len(found))
            row.append(f"{statistics.median(times):.2f}")
        assert len(results) == 1, results
        row.append(str(results.pop()))
        rows.append(row)
    plan = raw.execute(
        "EXPLAIN QUERY PLAN " + forms["IN (SELECT value FROM json_each(?))"](3)[0],
        forms["IN (SELECT value FROM json_each(?))"](3)[1](ids[:3]),
    ).fetchall()
    print(f"SQLite {sqlite3.sqlite_version}: {len(ids)} projects; median ms of {args.repeat}\n")
    print(table(["ids", *forms, "rows"], rows))
    print("\nPlan of the json_each form: " + "; ".join(str(r[-1]) for r in plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite's forms instead")
    parser.add_argument("--reuse", action="store_true", help="keep the loaded database")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if args.sqlite:
        sqlite(args)
    else:
        postgres(args)


if __name__ == "__main__":
    main()
