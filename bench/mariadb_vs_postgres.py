"""Benchmark: the default stats request and ``incr_many`` on MariaDB against PostgreSQL.

Each database runs in a child process of its own with the demo site's
settings (``config.settings``, ``DATABASE_URL``): migrate, the demo data,
a token, then the default stats request through Django's test client (no
server, no network client: Django, DRF, our code and the database round
trip) and ``incr_many`` of 1,000 distinct buckets. Prints the medians and
MariaDB's time as a multiple of PostgreSQL's.

Usage::

    mariadb_vs_postgres.py [--requests 500] [--batches 30]
        [--postgres postgres://postgres@127.0.0.1:5432/project_stats_bench_vendors]
        [--mariadb mysql://root@127.0.0.1:3306/project_stats_bench_vendors]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/0/projects/the-interstellar-jurisdiction/pump-station/stats/"


def create_database(url: str) -> None:
    import dj_database_url

    settings = dj_database_url.parse(url)
    name = settings["NAME"]
    if url.startswith("mysql"):
        import MySQLdb

        connection = MySQLdb.connect(
            host=settings["HOST"],
            port=int(settings["PORT"] or 3306),
            user=settings["USER"],
            password=settings["PASSWORD"],
        )
        connection.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        connection.close()
    else:
        import psycopg

        admin = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [name]
            ).fetchone()
            if not found:
                connection.execute(f'CREATE DATABASE "{name}"')


def child(requests: int, batches: int) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from project_stats import tsdb
    from project_stats.models import ApiToken, Project

    call_command("migrate", verbosity=0)
    call_command("project_stats_demo", verbosity=0)
    user = get_user_model().objects.get(username="demo")
    _, plaintext = ApiToken.objects.issue(user, scopes=["project:read"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}", HTTP_HOST="127.0.0.1")
    first = client.get(PATH)
    assert first.status_code == 200, (first.status_code, first.content[:200])
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(PATH)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
    request_ms = statistics.median(times) * 1000

    projects = list(Project.objects.all())
    rng = random.Random(0)
    now = int(time.time())
    times = []
    for _ in range(batches):
        items = [
            (rng.choice(projects), "received", now - rng.randrange(86400), 1) for _ in range(1000)
        ]
        start = time.perf_counter()
        tsdb.incr_many(items, rollups=[10])
        times.append(time.perf_counter() - start)
    incr_ms = statistics.median(times) * 1000
    print(json.dumps({"request_ms": request_ms, "incr_many_ms": incr_ms}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument(
        "--postgres", default="postgres://postgres@127.0.0.1:5432/project_stats_bench_vendors"
    )
    parser.add_argument(
        "--mariadb", default="mysql://root@127.0.0.1:3306/project_stats_bench_vendors"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.requests, args.batches)
        return
    results = {}
    for name, url in (("PostgreSQL", args.postgres), ("MariaDB", args.mariadb)):
        create_database(url)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--requests",
                str(args.requests),
                "--batches",
                str(args.batches),
            ],
            env={**os.environ, "DATABASE_URL": url, "CONN_MAX_AGE": "600"},
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    print("| | PostgreSQL | MariaDB | MariaDB / PostgreSQL |")
    print("| --- | ---: | ---: | ---: |")
    for key, label in (
        ("request_ms", "default stats request (median ms)"),
        ("incr_many_ms", "incr_many, 1,000 buckets (median ms)"),
    ):
        pg, my = results["PostgreSQL"][key], results["MariaDB"][key]
        print(f"| {label} | {pg:.2f} | {my:.2f} | {my / pg:.2f} |")


if __name__ == "__main__":
    main()
