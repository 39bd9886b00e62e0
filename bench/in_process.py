"""Benchmark: the read path in-process, through the site's WSGI handler, and its profile.

On ``project_stats_bench_big`` (loaded by ``http_read.py``), calls the demo
site's WSGI application (``bench.site_settings``: the site as shipped, its
database from ``BENCH_DATABASE_URL``) directly, no server and no network
client, so the figure is Django, DRF, our code and the database round trips
of one request. Prints milliseconds per request (median of the runs) for
each database connection setup given, or with ``--profile`` the top
entries of a cProfile of the requests.

Usage::

    in_process.py [TOKEN] [--requests 2000] [--runs 3] [--rounds 3] [--path PATH]
        [--setup shipped|persistent|health-checks|pool ...] [--profile [--top 25]]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, db_url  # noqa: E402

DATABASE = "project_stats_bench_big"
DEFAULT_PATH = "/api/0/projects/bench-org/p3/stats/"
SETUPS = ("shipped", "persistent", "health-checks", "pool")


def configure(setup: str) -> None:
    """Set up Django with the demo site's settings, the connections as ``setup`` says."""
    os.environ.setdefault("BENCH_DATABASE_URL", db_url(DATABASE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.site_settings"
    import django
    from django.conf import settings

    database = settings.DATABASES["default"]
    if setup == "persistent":
        database.update(CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=False)
        database["OPTIONS"] = {k: v for k, v in database.get("OPTIONS", {}).items() if k != "pool"}
    elif setup == "health-checks":
        database.update(CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True)
        database["OPTIONS"] = {k: v for k, v in database.get("OPTIONS", {}).items() if k != "pool"}
    elif setup == "pool":
        database.update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
        database["OPTIONS"] = {**database.get("OPTIONS", {}), "pool": {"min_size": 1}}
    django.setup()


def requester(token: str, path: str) -> Callable[[], int]:
    """A function making one GET of ``path`` through the WSGI handler; returns the status."""
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    path_info, _, query = path.partition("?")
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    status: list[str] = []

    def start_response(code: str, headers: Any, exc_info: Any = None) -> None:
        status.append(code)

    def get() -> int:
        environ = {**base, "wsgi.input": io.BytesIO(b"")}
        status.clear()
        response = application(environ, start_response)
        try:
            b"".join(response)
        finally:
            response.close()  # type: ignore[attr-defined]  # request_finished: connections
        return int(status[0].split()[0])

    return get


def count_round_trips() -> list[int]:
    """A counter of exchanges with the server (each wait for results in psycopg)."""
    import psycopg._cursor_base
    import psycopg.generators

    count = [0]
    real = psycopg.generators.execute

    def execute(pgconn: Any) -> Any:
        count[0] += 1
        return real(pgconn)

    psycopg._cursor_base.execute = execute  # type: ignore[assignment]
    psycopg.generators.execute = execute  # type: ignore[assignment]
    return count


def measure(
    token: str, path: str, setup: str, requests: int, runs: int
) -> tuple[float, list[float]]:
    """Round trips per request, and ms per request of each of ``runs`` runs (after a warm-up)."""
    configure(setup)
    get = requester(token, path)
    for _ in range(200):
        if get() != 200:
            raise SystemExit(f"{path} did not answer 200")
    trips = count_round_trips()
    for _ in range(100):
        get()
    per_request = trips[0] / 100
    results = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(requests):
            get()
        results.append((time.perf_counter() - started) * 1000 / requests)
    return per_request, results


def profile(token: str, path: str, setup: str, requests: int, top: int) -> str:
    configure(setup)
    get = requester(token, path)
    for _ in range(200):
        get()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(requests):
        get()
    profiler.disable()
    elapsed = (time.perf_counter() - started) * 1000 / requests
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"{requests} requests, {elapsed:.3f} ms each under the profiler\n{out.getvalue()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("token", nargs="?", help="default: a new token of the bench user")
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="runs per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per setup, alternating")
    parser.add_argument("--setup", action="append", choices=SETUPS)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setups = args.setup or ["shipped"]
    if args.token is None:
        from bench.http_read import BIG, load

        args.token = load(BIG, 2000, demo=True)
    if "pool" in setups and importlib.util.find_spec("psycopg_pool") is None:
        print("psycopg_pool is not installed: the pool setup is left out", file=sys.stderr)
        setups.remove("pool")
    if args.profile:
        print(profile(args.token, args.path, setups[0], args.requests, args.top))
        return
    if args.child:  # one setup per process: Django is configured once
        trips, results = measure(args.token, args.path, setups[0], args.requests, args.runs)
        print(json.dumps({"trips": trips, "ms": results}))
        return
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.path}")
    found: dict[str, list[float]] = {setup: [] for setup in setups}
    trips: dict[str, float] = {}
    for _ in range(args.rounds):  # setups alternate: the machine's noise hits each alike
        for setup in setups:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    args.token,
                    "--child",
                    "--setup",
                    setup,
                    "--path",
                    args.path,
                    "--requests",
                    str(args.requests),
                    "--runs",
                    str(args.runs),
                ],
                cwd=ROOT,
                check=True,
                text=True,
                capture_output=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            trips[setup] = result["trips"]
            found[setup] += result["ms"]
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    runs = args.rounds * args.runs
    print(
        f"| connections | round trips per request | ms per request, median of {runs} runs "
        f"| fastest run |\n|---|---|---|---|"
    )
    for setup in setups:
        times = found[setup]
        print(
            f"| {setup} | {trips[setup]:.2f} | {statistics.median(times):.3f} | {min(times):.3f} |"
        )


if __name__ == "__main__":
    main()
