"""Benchmark: ``stats_v2`` requests in-process, next to the organization stats endpoint.

Loads the demo data (three projects, 90 days, every stat) into PostgreSQL
``project_stats_bench_v2`` (created if missing; its demo organization is
replaced) and times requests through Django's test client: no HTTP server,
so the figures are the view, the one statement and the answer's shaping.
Prints a Markdown table: median and 95th percentile of ``--calls`` requests
per case after a warm-up, and the statements each request ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.common import django_site, ensure_database, table  # noqa: E402

DATABASE = "project_stats_bench_v2"
ORG = "/api/0/organizations/the-interstellar-jurisdiction"
GRAFANA = {"category": "error", "field": "sum(quantity)"}
CASES: list[tuple[str, str, dict[str, object]]] = [
    ("stats, 24 h hourly, summed (one stat)", f"{ORG}/stats/", {}),
    (
        "stats_v2, 1 d hourly, by outcome and reason",
        f"{ORG}/stats_v2/",
        {**GRAFANA, "statsPeriod": "1d", "interval": "1h", "groupBy": ["outcome", "reason"]},
    ),
    (
        "stats_v2, 7 d hourly, by project and outcome",
        f"{ORG}/stats_v2/",
        {**GRAFANA, "statsPeriod": "7d", "interval": "1h", "groupBy": ["project", "outcome"]},
    ),
    (
        "stats_v2, 90 d daily, by outcome",
        f"{ORG}/stats_v2/",
        {**GRAFANA, "statsPeriod": "90d", "interval": "1d", "groupBy": "outcome"},
    ),
    (
        "stats_v2, 1 h at 5 min (10 s buckets), by outcome",
        f"{ORG}/stats_v2/",
        {**GRAFANA, "statsPeriod": "1h", "interval": "5m", "groupBy": "outcome"},
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    ensure_database(DATABASE)
    django_site(DATABASE)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from project_stats import demo
    from project_stats.models import ApiToken

    call_command("migrate", verbosity=0)
    demo.load(now=timezone.now(), force=True)
    user = get_user_model()._default_manager.get(username=demo.USERNAME)
    _, plaintext = ApiToken.objects.issue(user, name="bench stats_v2", scopes=["org:read"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    rows = []
    for name, path, params in CASES:
        for _ in range(20):  # warm-up, last_used
            client.get(path, params)
        timings = []
        for _ in range(args.calls):
            started = time.perf_counter()
            response = client.get(path, params)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content
        with CaptureQueriesContext(connection) as queries:
            client.get(path, params)
        timings.sort()
        rows.append(
            (
                name,
                f"{statistics.median(timings) * 1000:.1f}",
                f"{timings[int(len(timings) * 0.95) - 1] * 1000:.1f}",
                len(queries.captured_queries),
            )
        )
    print(table(["request", "median ms", "p95 ms", "statements"], rows))


if __name__ == "__main__":
    main()
