"""Soak test: a minute of reads under load while events are ingested, on PostgreSQL.

Serves the demo site with gunicorn (2 workers, production-like settings,
database ``project_stats_bench_soak``, created if missing, demo data loaded)
and drives the default stats request with ``wrk`` (32 connections, 60 s by
default). Meanwhile a child process records events through
``tsdb.incr_many`` in a loop, into the projects being read. Every second the
resident memory (RSS, from ``/proc``) of each gunicorn worker is sampled.

Passes when every response was a 2xx (no socket errors either), the workers
stayed the same processes, and no worker's RSS grew more than 10 % past its
size at the end of the warm-up (the first sixth of the run, at least 5 s).
Prints Markdown tables; exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import db_url, gunicorn, manage, migrated, table  # noqa: E402

DATABASE = "project_stats_bench_soak"
ORG = "the-interstellar-jurisdiction"
PROJECTS = ("pump-station", "prime-mover", "the-spoiled-yoghurt")
PATH = f"/api/0/projects/{ORG}/{PROJECTS[0]}/stats/"
MAX_GROWTH = 0.10
BATCH = 500  # events per incr_many call

WRK_TOTAL_RE = re.compile(r"(\d+) requests in ([\d.]+)(s|m)")
WRK_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_SOCKET_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_LATENCY_RE = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ingest(database_url: str, deadline: float, results: Any) -> None:
    """Child process: ``incr_many`` batches into the read projects until ``deadline``."""
    os.environ.update(DJANGO_SETTINGS_MODULE="bench.site_settings", BENCH_DATABASE_URL=database_url)
    import random

    import django

    django.setup()
    from django.db import connection

    from project_stats import tsdb
    from project_stats.models import Project

    projects = list(Project.objects.filter(organization__slug=ORG).values_list("pk", flat=True))
    rng = random.Random(0)
    stats = ("received", "rejected", "blacklisted", "generated")
    events = batches = 0
    try:
        while time.time() < deadline:
            now = time.time()
            items = []
            for _ in range(BATCH):
                stat = rng.choice(stats)
                env = rng.choice(("production", "staging")) if stat == "generated" else None
                items.append((rng.choice(projects), stat, now - rng.random() * 3600, 1, env))
            tsdb.incr_many(items)
            events += BATCH
            batches += 1
        results.put(("ok", events, batches))
    except Exception as error:
        results.put(("error", events, repr(error)))
    finally:
        connection.close()


def process_children(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        match = re.search(r"^PPid:\s+(\d+)$", status, re.M)
        if match and int(match.group(1)) == parent:
            children.append(int(entry.name))
    return sorted(children)


def gunicorn_master(port: int) -> int:
    """The gunicorn master serving ``port``, found by its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gunicorn" in b" ".join(cmdline) and f"--bind=127.0.0.1:{port}".encode() in cmdline:
            return int(entry.name)
    raise RuntimeError(f"no gunicorn process binds port {port}")


def rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None  # gone
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
    return int(match.group(1)) if match else None


@dataclass
class Sampler:
    """Samples the RSS of ``pids`` every ``interval`` seconds in a thread."""

    pids: list[int]
    interval: float = 1.0
    samples: list[tuple[float, dict[int, int | None]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - started, {p: rss_kib(p) for p in self.pids}))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


def parse_wrk(out: str) -> dict[str, float]:
    total = WRK_TOTAL_RE.search(out)
    if total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    seconds = float(total.group(2)) * (60 if total.group(3) == "m" else 1)
    non_2xx = WRK_NON_2XX_RE.search(out)
    sockets = WRK_SOCKET_RE.search(out)
    latency = {p: float(v) * UNIT_MS[u] for p, v, u in WRK_LATENCY_RE.findall(out)}
    return {
        "requests": int(total.group(1)),
        "seconds": seconds,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, sockets.groups())) if sockets else 0,
        "p50": latency["50"],
        "p99": latency["99"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of the run (default 60)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    if args.seconds < 10:
        sys.exit("--seconds must be at least 10 (the warm-up takes the first sixth, 5 s or more)")

    migrated(DATABASE)
    manage(DATABASE, "project_stats_demo", "--days", "8", "--password", "soak", capture=True)
    token = manage(DATABASE, "project_stats_token", "demo", "--name", "soak", capture=True)
    token = token.strip().splitlines()[-1]

    warmup = max(5.0, args.seconds / 6)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    with gunicorn(DATABASE, workers=args.workers) as port:
        url = f"http://127.0.0.1:{port}{PATH}"
        master = gunicorn_master(port)
        deadline = time.monotonic() + 30
        while len(workers := process_children(master)) < args.workers:
            if time.monotonic() > deadline:
                sys.exit(f"expected {args.workers} gunicorn workers, found {workers}")
            time.sleep(0.1)
        # A few requests so that every worker has loaded the whole code path.
        subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{args.workers * 2}",
                "-d2s",
                "-H",
                f"Authorization: Bearer {token}",
                url,
            ],
            check=True,
            capture_output=True,
        )
        sampler = Sampler(workers)
        feeder = context.Process(
            target=ingest, args=(db_url(DATABASE), time.time() + args.seconds, results)
        )
        feeder.start()
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        started = time.monotonic()
        wrk = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-H",
                f"Authorization: Bearer {token}",
                url,
            ],
            check=True,
            text=True,
            capture_output=True,
        )
        elapsed = time.monotonic() - started
        sampler.stop()
        thread.join()
        feeder.join(timeout=60)
        after = process_children(master)
    status, events, detail = results.get(timeout=10)

    figures = parse_wrk(wrk.stdout)
    rows = []
    failures = []
    for pid in workers:
        series = [(t, s[pid]) for t, s in sampler.samples]
        warm = [kib for t, kib in series if t <= warmup and kib]
        later = [kib for t, kib in series if t > warmup and kib]
        if not warm or not later or any(kib is None for _, kib in series):
            failures.append(f"worker {pid} vanished during the run")
            continue
        base, peak, final = warm[-1], max(later), later[-1]
        growth = (peak - base) / base
        rows.append(
            [
                pid,
                f"{base / 1024:.1f}",
                f"{final / 1024:.1f}",
                f"{peak / 1024:.1f}",
                f"{growth:+.1%}",
            ]
        )
        if growth > MAX_GROWTH:
            failures.append(f"worker {pid} grew {growth:.1%} after the warm-up")
    if after != workers:
        failures.append(f"the workers changed during the run: {workers} -> {after}")
    if figures["non_2xx"]:
        failures.append(f"{figures['non_2xx']:.0f} non-2xx responses")
    if figures["socket_errors"]:
        failures.append(f"{figures['socket_errors']:.0f} socket errors (timeouts included)")
    if status != "ok":
        failures.append(f"ingestion failed: {detail}")

    print(
        f"### Soak: {args.seconds} s of wrk ({args.connections} connections) against gunicorn "
        f"({args.workers} workers) on PostgreSQL, with ingestion in parallel\n"
    )
    print(
        table(
            ["figure", "value"],
            [
                ["requests", f"{figures['requests']:,.0f}"],
                ["requests/s", f"{figures['requests'] / figures['seconds']:,.0f}"],
                ["latency p50 / p99 (ms)", f"{figures['p50']:.1f} / {figures['p99']:.1f}"],
                ["non-2xx responses", f"{figures['non_2xx']:.0f}"],
                ["socket errors", f"{figures['socket_errors']:.0f}"],
                ["events ingested (incr_many)", f"{events:,}"],
                ["events/s ingested", f"{events / elapsed:,.0f}"],
            ],
        )
    )
    print(f"\n### Worker memory (RSS, MiB; warm-up: the first {warmup:.0f} s)\n")
    print(table(["worker pid", "after warm-up", "final", "peak after warm-up", "growth"], rows))
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        sys.exit(1)
    print(f"\nPASSED: every response a 2xx, no worker grew more than {MAX_GROWTH:.0%}.")


if __name__ == "__main__":
    main()
