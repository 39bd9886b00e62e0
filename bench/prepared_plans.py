"""Benchmark: the plans PostgreSQL keeps for the prepared read statements.

On ``project_stats_bench_big`` (loaded by ``http_read.py``), runs each request
shape seven times in one connection (PostgreSQL plans the first five
executions of a prepared statement for their values, then may keep a generic
plan), then ``EXPLAIN (ANALYZE, BUFFERS) EXECUTE`` of the access statement
with the last request's values: which plan it used, the index the counts
came from, planning and execution times. The three project requests are one
statement (only values differ), so its plan counts add up down the table.
Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import db_url, table  # noqa: E402

DATABASE = "project_stats_bench_big"
ACCESS = "WITH lookup AS ("


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == "project_stats_eventcount" else []
    for child in plan.get("Plans", ()):
        found += _scans(child)
    return found


def _as_prepared(sql: str) -> str:
    parts = sql.split("%s")
    text = parts[0]
    for number, part in enumerate(parts[1:], start=1):
        text += f"${number}{part}"
    return text.replace("%%", "%")


def main() -> None:
    os.environ.setdefault("BENCH_DATABASE_URL", db_url(DATABASE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.site_settings"
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from bench.http_read import BIG, ORG, load

    token = sys.argv[1] if len(sys.argv) > 1 else load(BIG, 2000, demo=True)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    now = time.time()
    path = f"/api/0/projects/{ORG}/p3/stats/"
    org = f"/api/0/organizations/{ORG}/stats/"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.id FROM project_stats_project p JOIN project_stats_organization o "
            "ON o.id = p.organization_id WHERE o.slug = %s AND p.slug IN ('p1', 'p2', 'p3')",
            [ORG],
        )
        ids = "&".join(f"projectID={row[0]}" for row in cursor.fetchall())
    shapes = {
        "default: 24 points at 1h": path,
        "360 points at 10s": f"{path}?resolution=10s&since={now - 3590:.0f}",
        "90 points at 1d": f"{path}?resolution=1d&since={now - 89 * 86400:.0f}",
        "organization, summed, 3 projects": f"{org}?{ids}",
        "organization, per project, 3 projects": f"{org}?{ids}&group=project",
    }
    rows = []
    for name, url in shapes.items():
        seen: list[tuple[str, list[Any]]] = []

        def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
            seen.append((sql, list(params or [])))  # noqa: B023
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            for _ in range(7):
                response = client.get(url)
                if response.status_code != 200:
                    raise SystemExit(f"{url} answered {response.status_code}")
        sql, params = next((s, p) for s, p in reversed(seen) if s.startswith(ACCESS))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement = %s",
                [_as_prepared(sql)],
            )
            statement, generic, custom = cursor.fetchone()
            marks = ", ".join(["%s"] * len(params))
            cursor.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {statement}({marks})", params
            )
            (plan,) = cursor.fetchone()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        scans = _scans(plan[0]["Plan"])
        rows.append(
            [
                name,
                f"{generic} generic, {custom} custom",
                ", ".join(sorted({str(s.get("Index Name", s["Node Type"])) for s in scans})),
                f"{plan[0]['Planning Time']:.3f}",
                f"{plan[0]['Execution Time']:.3f}",
            ]
        )
    load_average = os.getloadavg()
    print("### Prepared statements: the plans kept (5 million rows)\n")
    print(
        f"Seven requests of each shape on one connection, then `EXPLAIN (ANALYZE, BUFFERS) "
        f"EXECUTE` of the eighth; load average {load_average[0]:.2f}.\n"
    )
    print(
        table(
            ["request", "plans so far", "counts read from", "planning ms", "execution ms"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
