"""Every benchmark in one run: ``make bench``. Writes Markdown to stdout.

Each part is its own script (runnable alone); this runs them one after the
other, so they never compete for the machine, and prints the machine first.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = [
    ("http_read.py", []),
    ("in_process.py", ["--setup", "shipped", "--setup", "health-checks", "--setup", "pool"]),
    ("prepared_plans.py", []),
    ("round_trips.py", []),
    ("stats_v2.py", []),
    ("ingest.py", []),
    ("buffer.py", []),
    ("buffer_reads.py", []),
    ("flush_scale.py", ["--projects", "1000", "10000"]),
    ("backfill.py", []),
    ("soak.py", []),
]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    pg = subprocess.run(
        ["psql", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.0f} GiB, "
        f"Python {platform.python_version()}, {pg or 'PostgreSQL'}"
    )


def main() -> None:
    print(f"## Benchmarks\n\nMachine: {machine()}\n")
    failed = []
    for script, args in PARTS:
        path = ROOT / "bench" / script
        if not path.exists():
            continue
        sys.stdout.flush()
        result = subprocess.run([sys.executable, str(path), *args], cwd=ROOT, check=False)
        if result.returncode:
            failed.append(script)
        print()
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
