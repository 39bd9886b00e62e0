"""Benchmark: the buffer's write path against a bare script, and against a git revision.

A ``redis-server`` of its own on a free port (its ``INFO commandstats`` reset
before each measure). Each measure runs in a child process importing
``project_stats`` from the working tree or from ``--against REV`` (``git
archive``), the two alternating ``--rounds`` times; the machine may be
loaded, so the figures that matter are ratios within one run:

- ``tsdb.incr`` calls/s (one event, 100 projects x 4 stats) against a bare
  ``EVALSHA`` of a one-line ``HINCRBY`` script from the same process;
- inside Redis, per ``incr``: the write script's time and the share of it
  spent in ``INFO server`` (the incarnation check) and in the bucket index
  (``ZADD``/``ZREMRANGEBYSCORE``/``PEXPIRE``), from ``INFO commandstats``
  (commands run by scripts are counted there too);
- the Python of ``incr`` alone (its scripts answered without Redis);
- ``tsdb.incr_many``: 1,000-event batches over 100 projects and 4 stats with
  timestamps spread over 1 s, 60 s and 3,000 s (10 s buckets of the
  Redis-only rollup): events/s, the fields (``HINCRBY``) a batch writes, the
  index trims (``ZREMRANGEBYSCORE``) it runs, and Redis's microseconds per
  batch and per field written.

Prints Markdown tables: ``.venv/bin/python bench/buffer_hot.py --against HEAD~1``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import table  # noqa: E402

STATS = ("received", "rejected", "blacklisted", "generated")
PROJECTS = 100
SPREADS = (1, 60, 3000)
BARE = "return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])"


def commandstats(client: Any) -> dict[str, tuple[int, int]]:
    """``{command: (calls, usec)}`` since the last ``CONFIG RESETSTAT``."""
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in client.info("commandstats").items()
    }


def child(url: str, code: str, calls: int) -> dict[str, float]:
    """The measures, ``project_stats`` imported from ``code``."""
    sys.path.insert(0, code)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.site_settings",
        BENCH_DATABASE_URL="sqlite:///:memory:",  # never used: nothing is flushed
    )
    import django

    django.setup()
    import redis
    from django.conf import settings

    import project_stats
    from project_stats import tsdb

    assert project_stats.__file__.startswith(code), project_stats.__file__
    client = redis.Redis.from_url(url)
    settings.PROJECT_STATS = {"BUFFER": {"URL": url, "PREFIX": "hot", "SHARDS": 8}}
    out: dict[str, float] = {}
    sha = client.script_load(BARE)
    tsdb.incr(1, "received")  # imports and connects outside the timing
    now = time.time()

    # Alternating slices of each, so that a change in the machine's load
    # weighs on both alike; each slice gives a ratio.
    bare: list[float] = []
    incr: list[float] = []
    slice_calls = max(1, calls // 5)
    for _ in range(5):
        t = time.perf_counter()
        for i in range(slice_calls):
            client.evalsha(sha, 1, "bare", STATS[i % 4], 1)
        bare.append(slice_calls / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(slice_calls):
            tsdb.incr(1 + i % PROJECTS, STATS[i % 4], timestamp=now)
        incr.append(slice_calls / (time.perf_counter() - t))
    out["bare"] = statistics.median(bare)
    out["incr"] = statistics.median(incr)
    out["ratio"] = statistics.median(i / b for i, b in zip(incr, bare, strict=True))

    # Inside Redis: incr alone, its commands counted.
    client.config_resetstat()
    for i in range(calls):
        tsdb.incr(1 + i % PROJECTS, STATS[i % 4], timestamp=now)
    used = commandstats(client)
    scripts = used["evalsha"][0]
    out["script_us"] = used["evalsha"][1] / scripts
    out["info_us"] = used["info"][1] / scripts
    index = ("zadd", "zremrangebyscore", "pexpire")
    out["index_us"] = sum(used.get(c, (0, 0))[1] for c in index) / scripts
    out["hincrby_us"] = used["hincrby"][1] / scripts
    client.flushall()

    # The Python of an incr alone: the script calls answered without Redis.
    module = sys.modules.get("project_stats.tsdb.buffer.write")
    module = module or sys.modules["project_stats.tsdb.buffer"]  # a single module before
    sent = module._per_node
    module._per_node = lambda config, source, calls: [b"id" for _ in calls]
    t = time.perf_counter()
    for i in range(calls):
        tsdb.incr(1 + i % PROJECTS, STATS[i % 4], timestamp=now)
    out["python_us"] = (time.perf_counter() - t) / calls * 1e6
    module._per_node = sent

    rng = random.Random(7)
    for spread in SPREADS:
        batches = [
            [
                (1 + rng.randrange(PROJECTS), STATS[i % 4], now - rng.random() * spread, 1)
                for i in range(1000)
            ]
            for _ in range(10)
        ]
        client.config_resetstat()
        t = time.perf_counter()
        for events in batches:
            tsdb.incr_many(events)
        out[f"many_{spread}"] = 10_000 / (time.perf_counter() - t)
        used = commandstats(client)
        fields = used.get("hincrby", (0, 0))[0] / len(batches)
        out[f"many_{spread}_fields"] = fields
        out[f"many_{spread}_us"] = used["evalsha"][1] / len(batches)
        out[f"many_{spread}_us_field"] = used["evalsha"][1] / len(batches) / fields
        # Index writes: one trim per Redis-only index written (per shard, or per bucket).
        out[f"many_{spread}_trims"] = used["zremrangebyscore"][0] / len(batches)
        # What the scripts ran, counted: the same on a loaded machine.
        ran = sum(calls for name, (calls, _) in used.items() if name != "evalsha")
        out[f"many_{spread}_commands"] = ran / len(batches)
        client.flushall()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", default="HEAD", help="git revision to compare with")
    parser.add_argument("--calls", type=int, default=5000, help="incr calls per measure")
    parser.add_argument("--rounds", type=int, default=3, help="measures of each, alternating")
    parser.add_argument("--child", nargs=2, metavar=("URL", "CODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.calls)))
        return

    from tests.redis_servers import start_server

    server = start_server("rdb")
    try:
        with tempfile.TemporaryDirectory() as before:
            archive = subprocess.run(
                ["git", "archive", args.against, "project_stats"],
                cwd=ROOT,
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
            codes = {args.against: before, "working tree": str(ROOT)}
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
            for round_ in range(args.rounds):
                # Each goes first in every other round (the second child of
                # a round met a slower server), on an emptied server whose
                # Lua state is new.
                order = list(codes.items())
                for name, code in order[::-1] if round_ % 2 else order:
                    server.client().flushall()
                    server.client().script_flush()
                    result = subprocess.run(
                        [sys.executable, __file__, "--calls", str(args.calls), "--child"]
                        + [server.url, code],
                        cwd=ROOT,
                        check=True,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    runs[name].append(json.loads(result.stdout.splitlines()[-1]))
    finally:
        server.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    old, new = args.against, "working tree"
    rows = []
    for label, key, unit in (
        ("bare `EVALSHA` (one `HINCRBY`), calls/s", "bare", "{:,.0f}"),
        ("`tsdb.incr`, calls/s", "incr", "{:,.0f}"),
        ("write script, us of Redis per `incr`", "script_us", "{:.1f}"),
        ("of which `INFO server`", "info_us", "{:.1f}"),
        ("of which the bucket index (ZADD, ZREMRANGEBYSCORE, PEXPIRE)", "index_us", "{:.1f}"),
        ("of which HINCRBY", "hincrby_us", "{:.1f}"),
        ("`incr` without Redis (its Python alone), us per call", "python_us", "{:.1f}"),
    ):
        rows.append([label, unit.format(med(old, key)), unit.format(med(new, key))])
    rows.append(
        [
            "`incr` / bare `EVALSHA` (median of the slices' ratios)",
            f"{med(old, 'ratio'):.2f}x",
            f"{med(new, 'ratio'):.2f}x",
        ]
    )
    for spread in SPREADS:
        key = f"many_{spread}"
        rows.append(
            [
                f"`incr_many`, 1,000 events over {spread:,} s: events/s (fields a "
                f"batch writes; commands its scripts run, index trims among them; "
                f"us of Redis a batch, a field)",
                *(
                    f"{med(name, key):,.0f} ({med(name, key + '_fields'):,.0f}; "
                    f"{med(name, key + '_commands'):,.0f}, {med(name, key + '_trims'):,.0f}; "
                    f"{med(name, key + '_us'):,.0f}, {med(name, key + '_us_field'):.2f})"
                    for name in (old, new)
                ),
            ]
        )
    print(f"### The buffer's write path, {old} against the working tree (medians of {args.rounds})")
    print()
    print(table(["", old, "working tree"], rows))


if __name__ == "__main__":
    main()
