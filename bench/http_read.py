"""Benchmark: the stats endpoint over HTTP against a floor, and volume independence.

Loads two PostgreSQL databases (created if missing, reused when already
loaded): ``project_stats_bench_big`` with 2,000 projects x 4 stats and every
rollup's full retention (about 4.9 million rows) plus the demo, and
``project_stats_bench_small`` with 4 projects (about 10 thousand rows).
Serves the site with gunicorn (2 workers, ``DEBUG=False``, persistent
connections) and drives it with ``wrk`` from this machine: the default
request (24 hourly points), 360 points at 10s, 90 points at 1d, and the
floor (a plain Django view returning the same 24-point JSON, no auth, no
database) in the same server. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    PYTHON,
    ROOT,
    db_url,
    ensure_database,
    gunicorn,
    manage,
    median,
    site_env,
    table,
)

ORG = "bench-org"
STATS = (0, 1, 2, 3)  # received, rejected, blacklisted, generated
ROLLUPS = ((10, 360), (3600, 168), (86400, 90))
BIG, SMALL = "project_stats_bench_big", "project_stats_bench_small"
WRK_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
LATENCY_RE = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def load(database: str, projects: int, *, demo: bool) -> str:
    """Fill ``database`` unless it already holds the data; returns a token for the bench user."""
    ensure_database(database)
    manage(database, "migrate", "--noinput", "-v", "0")
    expected = projects * len(STATS) * sum(n for _, n in ROLLUPS)
    with psycopg.connect(db_url(database), autocommit=True) as conn:
        org_id = conn.execute(
            "INSERT INTO project_stats_organization (slug, name, date_added) "
            "VALUES (%s, 'Bench', now()) ON CONFLICT (slug) DO UPDATE SET name = 'Bench' "
            "RETURNING id",
            [ORG],
        ).fetchone()[0]
        # Exactly p1..pN: a rerun with fewer projects drops the others.
        keep = [f"p{i}" for i in range(1, projects + 1)]
        stale = (
            "SELECT id FROM project_stats_project WHERE organization_id = %s AND NOT slug = ANY(%s)"
        )
        conn.execute(
            f"DELETE FROM project_stats_eventcount WHERE project_id IN ({stale})", [org_id, keep]
        )
        conn.execute(f"DELETE FROM project_stats_project WHERE id IN ({stale})", [org_id, keep])
        conn.execute(
            "INSERT INTO project_stats_project (organization_id, slug, name, date_added) "
            "SELECT %s, 'p' || g, 'Project ' || g, now() FROM generate_series(1, %s) g "
            "ON CONFLICT DO NOTHING",
            [org_id, projects],
        )
        have = conn.execute(
            "SELECT count(*) FROM project_stats_eventcount e "
            "JOIN project_stats_project p ON p.id = e.project_id WHERE p.organization_id = %s",
            [org_id],
        ).fetchone()[0]
        if have != expected:
            started = time.monotonic()
            conn.execute(
                "DELETE FROM project_stats_eventcount WHERE project_id IN "
                "(SELECT id FROM project_stats_project WHERE organization_id = %s)",
                [org_id],
            )
            now = int(time.time())
            for rollup, samples in ROLLUPS:
                conn.execute(
                    "INSERT INTO project_stats_eventcount "
                    "(project_id, stat, environment, rollup, timestamp, count) "
                    "SELECT p.id, s, '', %(r)s, to_timestamp(%(last)s - k * %(r)s), "
                    "(random() * 100)::int "
                    "FROM project_stats_project p, unnest(%(stats)s::int[]) s, "
                    "generate_series(0, %(n)s - 1) k WHERE p.organization_id = %(org)s "
                    "AND p.slug = ANY(%(slugs)s)",
                    {
                        "r": rollup,
                        "last": now - now % rollup,
                        "n": samples,
                        "org": org_id,
                        "stats": list(STATS),
                        "slugs": [f"p{i}" for i in range(1, projects + 1)],
                    },
                )
            conn.execute("VACUUM ANALYZE project_stats_eventcount")
            print(
                f"loaded {expected} rows into {database} in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
            )
    if demo:
        manage(database, "project_stats_demo", "--password", "bench-demo", capture=True)
    script = (
        "from django.contrib.auth import get_user_model;"
        "from project_stats.models import ApiToken, Organization, OrganizationMember;"
        "u, _ = get_user_model().objects.get_or_create(username='bench');"
        f"o = Organization.objects.get(slug='{ORG}');"
        "OrganizationMember.objects.get_or_create(organization=o, user=u);"
        "print(ApiToken.objects.issue(u, name='bench', scopes=['project:read'])[1])"
    )
    return manage(database, "shell", "-c", script, capture=True).strip().splitlines()[-1]


def wrk(
    url: str, token: str | None, *, connections: int, seconds: int
) -> tuple[float, float, float]:
    """``(requests/s, p50 ms, p99 ms)`` of one wrk run."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*cmd, url], check=True, text=True, capture_output=True).stdout
    if "Non-2xx" in out:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - our own server
            detail = "a single request succeeds"
        except urllib.error.HTTPError as exc:
            detail = f"{exc.code}: {exc.read()[:500]!r}"
        raise RuntimeError(f"non-2xx answers from {url} ({detail}):\n{out}")
    rps = float(WRK_RE.search(out).group(1))  # type: ignore[union-attr]
    lat = {p: float(v) * UNIT_MS[u] for p, v, u in LATENCY_RE.findall(out)}
    return rps, lat["50"], lat["99"]


def query_counts(database: str, token: str, paths: dict[str, str]) -> dict[str, int]:
    """SQL statements each request runs, counted in-process by bench/query_counts.py."""
    out = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "query_counts.py"), token, json.dumps(paths)],
        env=site_env(database),
        cwd=ROOT,
        check=True,
        text=True,
        capture_output=True,
    ).stdout
    return dict(json.loads(out.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per request (median)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--projects", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")

    big_token = load(BIG, args.projects, demo=True)
    small_token = load(SMALL, 4, demo=False)
    path = f"/api/0/projects/{ORG}/p3/stats/"
    with psycopg.connect(db_url(BIG)) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT p.id FROM project_stats_project p JOIN project_stats_organization o "
                "ON o.id = p.organization_id WHERE o.slug = %s AND p.slug = ANY(%s) ORDER BY p.id",
                [ORG, ["p1", "p2", "p3"]],
            )
        ]
    org_stats = f"/api/0/organizations/{ORG}/stats/?" + "&".join(f"projectID={i}" for i in ids)
    now = time.time()
    cases = {
        "floor (plain Django view, no auth, no DB)": ("/bench/floor/", False),
        "default: 24 points at 1h": (path, True),
        "360 points at 10s": (f"{path}?resolution=10s&since={now - 3590:.0f}", True),
        "90 points at 1d": (f"{path}?resolution=1d&since={now - 89 * 86400:.0f}", True),
        "reference: straightforward DRF, 24 points at 1h": (
            f"/bench/reference/projects/{ORG}/p3/stats/",
            True,
        ),
        "organization stats, summed, 3 projects": (org_stats, True),
        "organization stats, per project, 3 projects": (f"{org_stats}&group=project", True),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    volume: dict[str, list[float]] = {BIG: [], SMALL: []}
    with gunicorn(BIG) as port:
        base = f"http://127.0.0.1:{port}"
        for p, auth in cases.values():  # warm up every worker
            wrk(base + p, big_token if auth else None, connections=4, seconds=1)
        for _ in range(args.runs):
            for name, (p, auth) in cases.items():
                results[name].append(
                    wrk(
                        base + p,
                        big_token if auth else None,
                        connections=args.connections,
                        seconds=args.seconds,
                    )
                )
    for _ in range(args.runs):  # volume: alternate the two databases
        for database, token in ((SMALL, small_token), (BIG, big_token)):
            with gunicorn(database) as port:
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, token, connections=4, seconds=1)
                volume[database].append(
                    wrk(url, token, connections=args.connections, seconds=args.seconds)[0]
                )

    queries = query_counts(BIG, big_token, {n: p for n, (p, auth) in cases.items() if auth})
    floor_rps = median([r[0] for r in results[next(iter(cases))]])
    rows = []
    for name, runs in results.items():
        rps = median([r[0] for r in runs])
        rows.append(
            [
                name,
                f"{rps:.0f}",
                f"{median([r[1] for r in runs]):.2f}",
                f"{median([r[2] for r in runs]):.2f}",
                f"{rps / floor_rps:.2f}x",
            ]
        )
    print(
        f"### Read path over HTTP (gunicorn 2 workers, wrk {args.connections} connections, "
        f"median of {args.runs} x {args.seconds} s)\n"
    )
    print(table(["request", "req/s", "p50 ms", "p99 ms", "vs floor"], rows))
    ours = median([r[0] for r in results["default: 24 points at 1h"]])
    reference = median([r[0] for r in results["reference: straightforward DRF, 24 points at 1h"]])
    print(
        f"\nThe endpoint serves {ours / reference:.2f}x the straightforward DRF "
        "implementation's throughput (bench/reference.py; target at least 3x)."
    )
    print("\n### Queries per request\n")
    print(table(["request", "queries"], [[n, q] for n, q in queries.items()]))
    small, big = median(volume[SMALL]), median(volume[BIG])
    print("\n### Volume independence (default request)\n")
    print(
        table(
            ["table", "req/s"],
            [
                ["~10 thousand rows", f"{small:.0f}"],
                ["~5 million rows", f"{big:.0f}"],
                ["ratio small/big", f"{small / big:.2f}"],
            ],
        )
    )


if __name__ == "__main__":
    main()
