"""``manage.py`` commands run as real processes, on the test's database and buffer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the test database this test runs on (PostgreSQL only: a
    SQLite test database lives in this process's memory)."""
    assert connection.vendor == "postgresql"
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"


def environment(project_stats: dict[str, Any], url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_subprocess",
        "TEST_DATABASE_URL": url,
        "TEST_PROJECT_STATS": json.dumps(project_stats),
        "PYTHONUNBUFFERED": "1",
    }


def command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def run(
    project_stats: dict[str, Any], url: str, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py *args`` to its end; its exit status and output."""
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        command(*args),
        env=environment(project_stats, url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    project_stats: dict[str, Any], url: str, *args: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``manage.py *args``, its output into ``log``; the caller stops it."""
    with log.open("wb") as output:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
            command(*args),
            env=environment(project_stats, url),
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
