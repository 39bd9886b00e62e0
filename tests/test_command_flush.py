"""``project_stats_flush`` when the database fails (a message, or a retry with ``--loop``),
when the flush fails unexpectedly, and its health check.

The failure is real: the applied batches' table is renamed away while the
command runs, so the flush's transaction fails on the database.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from project_stats import tsdb
from project_stats.models import AppliedBatch, EventCount, Project
from project_stats.tsdb import buffer as buffer_module

from .redis_servers import _free_port, buffer_settings

TABLE = AppliedBatch._meta.db_table
AWAY = f"{TABLE}_away"


def rename(old: str, new: str) -> None:
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {qn(old)} RENAME TO {qn(new)}")


@contextmanager
def applied_batches_missing() -> Iterator[None]:
    """The applied batches' table is gone until the block ends (or ``restore()``)."""
    rename(TABLE, AWAY)
    try:
        yield
    finally:
        restore()


def restore() -> None:
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    if AWAY in tables:
        rename(AWAY, TABLE)


def stored(project: Project) -> int:
    return sum(
        EventCount.objects.filter(project=project, rollup=3600, environment="").values_list(
            "count", flat=True
        )
    )


# Transactional: MariaDB commits the rename, and with it anything the test wrote.
@pytest.mark.django_db(transaction=True)
def test_a_database_error_is_a_command_error_and_loses_nothing(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=3)
    with applied_batches_missing(), pytest.raises(CommandError) as raised:
        call_command("project_stats_flush", stdout=io.StringIO())
    message = str(raised.value)
    assert message.startswith("The flush failed in the database")
    assert TABLE in message  # the database's own words say what failed
    assert "Redis keeps the claimed increments" in message
    assert stored(project) == 0
    call_command("project_stats_flush", stdout=io.StringIO())
    assert stored(project) == 3


class _Restorer(logging.Handler):
    """Restores the table at the loop's first failure, stops the loop once it has flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []
        self.failed_records: list[logging.LogRecord] = []
        self.flushes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Flush failed"):
            self.failures.append(text)
            self.failed_records.append(record)
            restore()  # runs in the loop's own thread, between two flushes
        elif text.startswith("Flushed") and self.failures:
            self.flushes.append(text)
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.django_db(transaction=True)
def test_the_loop_logs_a_database_error_and_retries(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=4)
    handler = _Restorer()
    logger = logging.getLogger("project_stats.flush")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    # Only a safety net: the handler stops the loop long before this.
    timer = threading.Timer(120.0, os.kill, (os.getpid(), signal.SIGTERM))
    out, err = io.StringIO(), io.StringIO()
    try:
        with applied_batches_missing():
            timer.start()
            call_command(
                "project_stats_flush", "--loop", "--interval", "0.05", stdout=out, stderr=err
            )
    finally:
        timer.cancel()
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    assert len(handler.failures) == 1 and TABLE in handler.failures[0]
    # Logged once, as an error with its traceback; not printed a second time.
    (record,) = handler.failed_records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "Flush failed" not in err.getvalue()
    # One row per rollup the database keeps (the others live in Redis only).
    rows = len([r for r, _ in tsdb.get_rollups() if r not in buffer_module.redis_only_rollups()])
    assert handler.flushes and handler.flushes[0].startswith(f"Flushed {rows} rows from 1 batches")
    assert out.getvalue().rstrip().endswith("Stopped.")
    assert stored(project) == 4


def poison(config: dict[str, Any], project: Project) -> None:
    """A field the flush cannot parse in the live hash of ``project``'s shard."""
    import redis

    tag = buffer_module.keys._tag(config, buffer_module.keys._shard(config, project.pk))
    client: Any = (redis.RedisCluster if config["CLUSTER"] else redis.Redis).from_url(config["URL"])
    try:
        client.hset(f"{tag}:live", f"{project.pk}:1:3600:not-a-number:", 1)
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_is_logged_with_its_traceback_and_the_loop_exits(
    buffer: dict[str, Any], project: Project, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=4)
    poison(buffer, project)
    timer = threading.Timer(120.0, os.kill, (os.getpid(), signal.SIGTERM))  # a safety net
    out, err = io.StringIO(), io.StringIO()
    timer.start()
    try:
        with (
            caplog.at_level(logging.INFO, logger="project_stats.flush"),
            pytest.raises(CommandError, match="2 flushes failed in a row") as raised,
        ):
            call_command(
                "project_stats_flush",
                *("--loop", "--interval", "0.05", "--max-failures", "2"),
                stdout=out,
                stderr=err,
            )
    finally:
        timer.cancel()
    assert "not-a-number" in str(raised.value)
    failed = [r for r in caplog.records if r.getMessage().startswith("Flush failed")]
    assert len(failed) == 2
    for record in failed:
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "Flush failed" not in err.getvalue()
    assert stored(project) == 0  # the poisoned batch stays claimed, nothing half-applied


def check(*args: str) -> str:
    out = io.StringIO()
    call_command("project_stats_flush", "--check", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_check_passes_then_fails_on_lag_and_on_an_unreachable_redis(
    buffer: dict[str, Any], project: Project, now: datetime, settings: Any
) -> None:
    assert check().startswith("OK: lag 0.0s")
    tsdb.incr(project, "received", timestamp=now, count=1)
    time.sleep(1.1)  # the lag is measured on Redis's clock: let it pass 1 s
    with pytest.raises(CommandError) as raised:
        check("--max-lag", "0.5")
    message = str(raised.value)
    assert message.startswith("lag ") and "above 0.5s" in message and "\n" not in message
    assert check("--max-lag", "600").startswith("OK")
    call_command("project_stats_flush", stdout=io.StringIO())
    assert check("--max-lag", "0.5").startswith("OK: lag 0.0s")
    settings.PROJECT_STATS = {
        "BUFFER": {**buffer, "URL": f"redis://127.0.0.1:{_free_port()}/0", "CLUSTER": False}
    }
    with pytest.raises(CommandError, match=r"^Redis unreachable: Redis is unavailable"):
        check()


@pytest.mark.django_db
def test_check_reports_an_evicting_policy_and_memory_near_maxmemory(
    redis_server: Any, settings: Any
) -> None:
    settings.PROJECT_STATS = {"BUFFER": buffer_settings("single", redis_server.url)}
    assert check().startswith("OK")
    redis_server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    evicting = r"maxmemory-policy allkeys-lru .*\(project_stats.E026\)"
    with pytest.raises(CommandError, match=evicting):
        check()
    redis_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    used = int(redis_server.client().info("memory")["used_memory"])
    redis_server.command("CONFIG", "SET", "maxmemory", str(int(used * 1.05)))
    with pytest.raises(CommandError, match=r"uses 9\d% of its maxmemory .*limit 90%"):
        check()
    assert check("--max-memory", "99.9").startswith("OK")
    redis_server.command("CONFIG", "SET", "maxmemory", "0")
    assert check().startswith("OK")


@pytest.mark.django_db
def test_check_reports_a_user_that_may_not_run_info_and_the_policy_unknown(
    redis_server: Any, settings: Any
) -> None:
    redis_server.command("ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-@dangerous")
    url = f"redis://app:secret@127.0.0.1:{redis_server.port}/0"
    settings.PROJECT_STATS = {"BUFFER": buffer_settings("single", url)}
    with pytest.raises(CommandError) as raised:
        check()
    (line,) = str(raised.value).splitlines()
    assert "may not run INFO" in line and "(project_stats.E027)" in line
    assert "; warning: The maxmemory-policy" in line and "(project_stats.W004)" in line


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_check_as_a_process_exits_1_with_one_line_when_the_database_is_down(
    buffer: dict[str, Any],
) -> None:
    from .manage_process import database_url, run

    healthy = run({"BUFFER": buffer}, database_url(), "project_stats_flush", "--check")
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith("OK")
    down = f"postgres://postgres@127.0.0.1:{_free_port()}/nothing"
    failed = run({"BUFFER": buffer}, down, "project_stats_flush", "--check")
    assert failed.returncode == 1
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith("CommandError: database unreachable (OperationalError")


@pytest.mark.django_db(transaction=True)
def test_stats_json_is_one_document_per_shard_and_totals(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=2)
    out = io.StringIO()
    call_command("project_stats_flush", "--stats", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert [shard["shard"] for shard in document["shards"]] == list(range(buffer["SHARDS"]))
    busy = [s for s in document["shards"] if s["fields"]]
    assert len(busy) == 1 and busy[0]["oldest_seconds"] is not None
    assert document["totals"]["shards"] == buffer["SHARDS"]
    assert document["totals"]["fields"] == busy[0]["fields"]
    assert document["totals"]["flushed_at"] is None
    call_command("project_stats_flush", stdout=io.StringIO())
    out = io.StringIO()
    call_command("project_stats_flush", "--stats", "--json", stdout=out)
    totals = json.loads(out.getvalue())["totals"]
    assert totals["fields"] == 0 and totals["oldest_seconds"] is None
    assert totals["flushed_at"] is not None


def test_the_loop_as_a_process_exits_1_and_says_each_failure_once(buffer: dict[str, Any]) -> None:
    """What systemd sees: two warnings, one line each, then exit status 1."""
    from .manage_process import run

    down = {"BUFFER": {**buffer, "URL": f"redis://127.0.0.1:{_free_port()}/0", "CLUSTER": False}}
    done = run(
        down,
        "sqlite://:memory:",
        *("project_stats_flush", "--loop", "--interval", "0.05", "--max-failures", "2"),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    failed = [line for line in lines if "Flush failed" in line]
    assert len(failed) == 2 and "Redis is unavailable" in failed[0]
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith("CommandError: 2 flushes failed in a row")
    assert "Stopped." not in done.stdout
