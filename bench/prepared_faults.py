"""Benchmark: what the prepared read statement costs where things go wrong.

On a small database of its own (``project_stats_bench_prepared``, or the
name given), with the demo site's settings:

- the access statement of a default stats request through
  ``prepared.fetch_all``, microseconds per call (median of the runs): out of a
  transaction, inside one, and inside one with a savepoint around the
  statement, which is what retrying a failed statement there would need;
- 200 first executions that fail (the statement is prepared, then planning
  times out on a lock another connection holds on one of the table's
  indexes): the statements left prepared on the connection and the backend's
  memory (``pg_backend_memory_contexts``) before and after.

Prints a Markdown table.

Usage::

    prepared_faults.py [DATABASE] [--calls 3000] [--runs 5] [--failures 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import db_url, django_site, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_prepared"
ACCESS = "WITH lookup AS ("


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database", nargs="?", default=DATABASE)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--failures", type=int, default=200)
    args = parser.parse_args()
    migrated(args.database)
    django_site(args.database)
    from django.contrib.auth import get_user_model
    from django.db import DatabaseError, connection, transaction
    from django.test import Client
    from django.utils import timezone

    from project_stats import prepared, tsdb
    from project_stats.models import ApiToken, EventCount, Organization, OrganizationMember

    organization, _ = Organization.objects.get_or_create(slug="bench-faults", name="faults")
    project, _ = organization.projects.get_or_create(slug="p1", name="p1")
    user, _ = get_user_model().objects.get_or_create(username="bench-faults")
    OrganizationMember.objects.get_or_create(organization=organization, user=user)
    _, token = ApiToken.objects.issue(user, scopes=["project:read"])
    now = timezone.now()
    tsdb.incr_many(
        (project, "received", now - i * timezone.timedelta(hours=1), 1) for i in range(48)
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    path = f"/api/0/projects/{organization.slug}/{project.slug}/stats/"
    seen: list[tuple[str, list[Any]]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        if client.get(path).status_code != 200:
            raise SystemExit(f"{path} did not answer 200")
    sql, params = next((s, p) for s, p in seen if s.startswith(ACCESS))

    def timed(setup: str) -> float:
        medians = []
        for _ in range(args.runs):
            times = []
            for _ in range(args.calls):
                if setup == "autocommit":
                    start = time.perf_counter()
                    prepared.fetch_all(connection, sql, params)
                    times.append(time.perf_counter() - start)
                    continue
                with transaction.atomic():
                    start = time.perf_counter()
                    savepoint = transaction.savepoint() if setup == "savepoint" else None
                    prepared.fetch_all(connection, sql, params)
                    if savepoint is not None:
                        transaction.savepoint_commit(savepoint)
                    times.append(time.perf_counter() - start)
            medians.append(statistics.median(times) * 1e6)
        return statistics.median(medians)

    rows: list[list[object]] = [
        ["access statement, out of a transaction", f"{timed('autocommit'):.0f} µs"],
        ["the same inside `atomic()`", f"{timed('atomic'):.0f} µs"],
        ["inside `atomic()`, with a savepoint around it", f"{timed('savepoint'):.0f} µs"],
    ]

    def state() -> tuple[int, float]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            (count,) = cursor.fetchone()
            cursor.execute("SELECT sum(total_bytes) FROM pg_backend_memory_contexts")
            (memory,) = cursor.fetchone()
        return count, int(memory) / 2**20

    connection.close()  # a new session: nothing prepared yet
    count, memory = state()
    index = next(c.name for c in EventCount._meta.constraints if c.name.endswith("bucket_uniq"))
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '20ms'")
    with (
        psycopg.connect(db_url(args.database), autocommit=True) as locker,
        locker.transaction(),
    ):
        # Planning opens the table's indexes and waits for this lock.
        locker.execute(f'REINDEX INDEX "{index}"')
        for _ in range(args.failures):
            try:
                prepared.fetch_all(connection, sql, params)
            except DatabaseError:
                continue
            raise SystemExit("the statement did not fail")
    with connection.cursor() as cursor:
        cursor.execute("RESET statement_timeout")
    after_count, after_memory = state()
    rows.append(
        [
            f"{args.failures} failed first executions: statements prepared, backend memory",
            f"{count} → {after_count}, {memory:.1f} MB → {after_memory:.1f} MB",
        ]
    )
    print("### Prepared statements where things go wrong\n")
    print(f"Load average {os.getloadavg()[0]:.2f}.\n")
    print(table(["what", "figure"], rows))


if __name__ == "__main__":
    main()
