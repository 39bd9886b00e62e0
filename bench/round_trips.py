"""Benchmark: the access statement against the ways it could be split.

On ``project_stats_bench_big`` (loaded by ``http_read.py``), times the
default stats request's reads with psycopg directly, no Django in the loop:
three statements one after the other (token with user, project with
membership, counts: the read path before it was one statement), the same
three in psycopg's pipeline mode (one network round trip, three statements
for the server), and the one statement the views run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import db_url, django_site, table  # noqa: E402

DATABASE = "project_stats_bench_big"
ORG, PROJECT = "bench-org", "p3"

TOKEN_SQL = (
    "SELECT t.id, t.scopes, t.revoked_at, t.expires_at, t.last_used, u.id, u.is_active, "
    "u.is_superuser FROM project_stats_apitoken t JOIN auth_user u ON u.id = t.user_id "
    "WHERE t.digest = %s"
)
PROJECT_SQL = (
    "SELECT p.id, p.slug, p.organization_id FROM project_stats_project p "
    "JOIN project_stats_organization o ON o.id = p.organization_id "
    "WHERE o.slug = %s AND p.slug = %s AND EXISTS (SELECT 1 "
    "FROM project_stats_organizationmember m WHERE m.organization_id = o.id AND m.user_id = %s)"
)
COUNTS_SQL = (
    "SELECT extract(epoch FROM timestamp)::bigint, count FROM project_stats_eventcount "
    "WHERE project_id = %s AND stat = 0 AND rollup = 3600 AND environment = '' "
    "AND timestamp >= to_timestamp(%s) AND timestamp <= to_timestamp(%s)"
)


def the_statement() -> tuple[str, list[object], str]:
    """The views' statement for the default request, with a fresh token's digest."""
    django_site(DATABASE)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from project_stats.models import ApiToken

    user = get_user_model().objects.get(username="bench")
    _, plaintext = ApiToken.objects.issue(user, name="round trips")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    path = f"/api/0/projects/{ORG}/{PROJECT}/stats/"
    client.get(path)  # last_used
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    (query,) = queries.captured_queries
    # Django shows the statement with its values inlined: run it as it was sent.
    return query["sql"].replace("%", "%%"), [], hashlib.sha256(plaintext.encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    statement, params, digest = the_statement()
    now = int(time.time())
    last = now - now % 3600
    first = last - 23 * 3600
    with psycopg.connect(db_url(DATABASE), autocommit=True) as conn:
        user_id = conn.execute(TOKEN_SQL, [digest]).fetchone()[5]  # type: ignore[index]
        project_id = conn.execute(PROJECT_SQL, [ORG, PROJECT, user_id]).fetchone()[0]  # type: ignore[index]

        def sequential() -> None:
            conn.execute(TOKEN_SQL, [digest]).fetchall()
            conn.execute(PROJECT_SQL, [ORG, PROJECT, user_id]).fetchall()
            conn.execute(COUNTS_SQL, [project_id, first, last]).fetchall()

        def pipeline() -> None:
            with conn.pipeline():
                cursors = [
                    conn.execute(TOKEN_SQL, [digest]),
                    conn.execute(PROJECT_SQL, [ORG, PROJECT, user_id]),
                    conn.execute(COUNTS_SQL, [project_id, first, last]),
                ]
            for cursor in cursors:
                cursor.fetchall()

        def one() -> None:
            conn.execute(statement, params).fetchall()  # type: ignore[arg-type]

        ways = {
            "three statements, one after the other": sequential,
            "three statements, pipeline mode": pipeline,
            "one statement (the views')": one,
        }
        timings: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.runs):
            for name, way in ways.items():
                way()
                started = time.perf_counter()
                for _ in range(args.calls):
                    way()
                timings[name].append((time.perf_counter() - started) / args.calls * 1000)
    print(
        f"### Reads of the default request, psycopg alone (median of {args.runs} x {args.calls})\n"
    )
    print(
        table(
            ["way", "ms per request"],
            [[name, f"{statistics.median(t):.3f}"] for name, t in timings.items()],
        )
    )


if __name__ == "__main__":
    main()
