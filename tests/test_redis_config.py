"""What the write buffer requires of its Redis (``project_stats.tsdb.redis_config``):
no eviction, and a user allowed ``INFO``. Each test runs a ``redis-server`` of
its own, configured as a deployment might be (``maxmemory`` with an evicting
policy, ACL users), and checks what the system check, the flusher and the
write say and do.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command

from project_stats import tsdb
from project_stats.checks import check_buffer_redis
from project_stats.models import EventCount, Project
from project_stats.tsdb import buffer as buffer_module
from project_stats.tsdb import redis_config

from .factories import ProjectFactory
from .redis_servers import RedisServer, _free_port, buffer_settings

# The page of the docs that holds the Redis configuration (the ACL line).
REDIS_DOCS = Path(__file__).resolve().parent.parent / "docs" / "howto" / "redis.md"
OURS = ("project_stats.E026", "project_stats.E027", "project_stats.W004", "project_stats.W005")


@pytest.fixture(autouse=True)
def _fresh_probes() -> Any:
    # Servers of these tests may reuse a port a previous test's server had.
    redis_config.forget()
    yield
    redis_config.forget()


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    """A Redis of the test's own with a 64 MB ``maxmemory`` (policy: noeviction)."""
    redis_server.command("CONFIG", "SET", "maxmemory", str(64 * 2**20))
    return redis_server


def use(settings: Any, url: str, **extra: Any) -> dict[str, Any]:
    config = buffer_settings("single", url, **extra)
    settings.PROJECT_STATS = {**getattr(settings, "PROJECT_STATS", {}), "BUFFER": config}
    return config


def ours(messages: list[Any]) -> list[str]:
    return sorted(m.id for m in messages if m.id in OURS)


def stored(project: Project, rollup: int = 3600) -> int:
    rows = EventCount.objects.filter(project=project, rollup=rollup, environment="")
    return sum(rows.values_list("count", flat=True))


def info(server: RedisServer, section: str) -> dict[str, Any]:
    client = server.client()
    try:
        return dict(client.info(section))
    finally:
        client.close()


def info_calls(server: RedisServer) -> int:
    """How many INFO commands the server ran (scripts' included)."""
    return int(info(server, "commandstats").get("cmdstat_info", {}).get("calls", 0))


def total(series: list[tuple[int, int]]) -> int:
    return sum(count for _, count in series)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("allkeys-lru", ["project_stats.E026"]),
        ("volatile-lru", ["project_stats.E026"]),
        ("noeviction", []),
    ],
)
def test_the_deploy_check_reports_an_evicting_policy(
    settings: Any, server: RedisServer, policy: str, expected: list[str]
) -> None:
    server.command("CONFIG", "SET", "maxmemory-policy", policy)
    use(settings, server.url)
    found = run_checks(include_deployment_checks=True)
    assert ours(found) == expected
    for message in found:
        if message.id == "project_stats.E026":
            assert policy in message.msg and "64.0 MiB" in message.msg
            assert f"127.0.0.1:{server.port}" in message.msg
            assert "noeviction" in message.hint and "ACCEPT_EVICTION" in message.hint
    # Not a check of every command: it asks Redis.
    assert ours(run_checks()) == []


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random"])
def test_accepted_eviction_passes_the_check(
    settings: Any, server: RedisServer, policy: str
) -> None:
    server.command("CONFIG", "SET", "maxmemory-policy", policy)
    use(settings, server.url, ACCEPT_EVICTION=True)
    assert ours(check_buffer_redis()) == []


def test_an_unreachable_redis_is_a_deploy_warning(settings: Any) -> None:
    use(settings, f"redis://127.0.0.1:{_free_port()}/0", SOCKET_TIMEOUT=2.0)
    found = check_buffer_redis()
    assert ours(found) == ["project_stats.W005"]
    assert "ConnectionError" in found[0].msg


def test_a_refused_info_reports_the_policy_unknown_and_the_missing_grant(
    settings: Any, server: RedisServer
) -> None:
    server.command("ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-@dangerous")
    use(settings, f"redis://app:secret@127.0.0.1:{server.port}/0")
    found = {m.id: m for m in check_buffer_redis()}
    assert sorted(found) == ["project_stats.E027", "project_stats.W004"]
    assert "may not run INFO" in found["project_stats.E027"].msg
    assert "+info" in (found["project_stats.E027"].hint or "")
    # Unknown is not unsafe: a warning, not E026.
    assert "unknown" in found["project_stats.W004"].msg
    assert found["project_stats.W004"].level < found["project_stats.E027"].level
    use(settings, f"redis://app:secret@127.0.0.1:{server.port}/0", ACCEPT_EVICTION=True)
    assert ours(check_buffer_redis()) == ["project_stats.E027"]


@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_the_first_write_to_an_evicting_redis_is_refused(
    settings: Any,
    server: RedisServer,
    project: Project,
    now: datetime,
    policy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.command("CONFIG", "SET", "maxmemory-policy", policy)
    use(settings, server.url)
    caplog.set_level(logging.ERROR, logger="project_stats.flush")
    for _ in range(2):
        with pytest.raises(tsdb.BufferUnavailable) as raised:
            tsdb.incr(project, "received", timestamp=now, count=2)
        assert policy in str(raised.value)
        assert "ACCEPT_EVICTION" in str(raised.value)
    assert server.command("DBSIZE") == 0
    assert stored(project) == 0
    # Logged once per process, not per write.
    assert [r.getMessage().count(policy) > 0 for r in caplog.records] == [True]
    use(settings, server.url, ACCEPT_EVICTION=True)
    tsdb.incr(project, "received", timestamp=now, count=2)
    assert server.command("DBSIZE") > 0


@pytest.mark.django_db
def test_with_on_error_database_no_count_is_lost_past_maxmemory(
    settings: Any, server: RedisServer, now: datetime
) -> None:
    """Writing well past ``maxmemory`` with ``allkeys-lru``: every hourly count
    reaches the database (before: Redis evicted most of them silently)."""
    used = int(info(server, "memory")["used_memory"])
    server.command("CONFIG", "SET", "maxmemory", str(used + 2**20))
    server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    use(settings, server.url, ON_ERROR="database")
    projects = [ProjectFactory() for _ in range(8)]
    sent = dict.fromkeys(projects, 0)
    environment = "e" * 60
    for call in range(150):
        batch = []
        for hour in range(20):
            project = projects[(call + hour) % len(projects)]
            when = now - timedelta(hours=call * 20 + hour)
            batch.append((project, "received", when, 3, f"{environment}{hour}"))
            sent[project] += 3
        tsdb.incr_many(batch)
    tsdb.flush()
    assert {p.pk: stored(p) for p in projects} == {p.pk: sent[p] for p in projects}
    assert sum(stored(p, rollup=86400) for p in projects) == sum(sent.values())


@pytest.mark.django_db
def test_a_config_set_later_is_noticed_and_the_probe_costs_one_round_trip(
    settings: Any,
    server: RedisServer,
    project: Project,
    now: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(settings, server.url)
    before = info_calls(server)
    for _ in range(5):
        tsdb.incr(project, "received", timestamp=now)
    # One INFO per write script (its run_id), one for the probe, one for
    # the reading above: the probe ran on the first write only.
    assert info_calls(server) - before == 5 + 1 + 1
    server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu")
    tsdb.incr(project, "received", timestamp=now)  # not probed again yet
    monkeypatch.setattr(redis_config, "RECHECK_SECONDS", 0.0)
    with pytest.raises(tsdb.BufferUnavailable, match="allkeys-lfu"):
        tsdb.incr(project, "received", timestamp=now)
    tsdb.flush()
    assert stored(project) == 6


class _StopAfterFlush(logging.Handler):
    """Stops a flush loop (SIGTERM) once it has flushed."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Flushed"):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("loop", [False, True])
def test_the_flusher_reports_an_evicting_policy_at_start_and_flushes(
    settings: Any,
    server: RedisServer,
    project: Project,
    now: datetime,
    loop: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use(settings, server.url)
    tsdb.incr(project, "received", timestamp=now, count=3)
    server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    caplog.set_level(logging.INFO, logger="project_stats.flush")
    err = io.StringIO()
    if loop:
        handler = _StopAfterFlush()
        logging.getLogger("project_stats.flush").addHandler(handler)
        timer = threading.Timer(120.0, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            call_command(
                "project_stats_flush",
                "--loop",
                "--interval",
                "0.05",
                stdout=io.StringIO(),
                stderr=err,
            )
        finally:
            timer.cancel()
            logging.getLogger("project_stats.flush").removeHandler(handler)
        flushed = [r for r in caplog.records if r.getMessage().startswith("Flushed")]
    else:
        out = io.StringIO()
        call_command("project_stats_flush", stdout=out, stderr=err)
        assert out.getvalue().startswith("Flushed")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "allkeys-lru" in errors[0].getMessage()
    assert "project_stats.E026" in errors[0].getMessage()
    assert "allkeys-lru" in err.getvalue()
    if loop:
        assert caplog.records.index(errors[0]) < caplog.records.index(flushed[0])
    assert stored(project) == 3


def test_every_primary_of_a_cluster_is_probed(settings: Any, killable_cluster: Any) -> None:
    evicting = killable_cluster.ports[1]
    killable_cluster.command(evicting, "CONFIG", "SET", "maxmemory-policy", "volatile-lru")
    settings.PROJECT_STATS = {"BUFFER": buffer_settings("cluster", killable_cluster.url)}
    found = check_buffer_redis()
    assert ours(found) == ["project_stats.E026"]
    assert f"127.0.0.1:{evicting}" in found[0].msg
    for port in set(killable_cluster.ports) - {evicting}:
        assert f":{port}" not in found[0].msg


def documented_acl() -> list[str]:
    """The least-privilege ``ACL SETUSER`` line of the docs, as words."""
    lines = [
        line.strip()
        for line in REDIS_DOCS.read_text().splitlines()
        if line.startswith("ACL SETUSER project_stats ")
    ]
    assert len(lines) == 1, "docs/howto/redis.md documents one least-privilege user"
    return lines[0].split()


@pytest.mark.django_db(transaction=True)
def test_the_documented_least_privilege_user_can_do_everything(
    settings: Any, redis_server: RedisServer, now: datetime
) -> None:
    config = buffer_settings("single", redis_server.url)
    words = documented_acl()
    prefix = config["PREFIX"]
    rules = [
        word.replace("{project_stats:", "{" + prefix + ":").replace(">PASSWORD", ">secret")
        for word in words[3:]
    ]
    assert f"~{{{prefix}:*" in rules and "+@all" not in rules  # limited to the prefix
    redis_server.command("ACL", "SETUSER", "project_stats", *rules)
    redis_server.command("ACL", "LOG", "RESET")
    url = f"redis://project_stats:secret@127.0.0.1:{redis_server.port}/0"
    settings.PROJECT_STATS = {"BUFFER": {**config, "URL": url}}
    assert ours(check_buffer_redis()) == []
    project, other = ProjectFactory(), ProjectFactory()
    start = now - timedelta(hours=2)
    tsdb.incr(project, "received", timestamp=now, count=5, environment="prod")
    tsdb.incr_many([(other, "received", now, 2), (project, "rejected", start, 1)])
    assert tsdb.environment_exists(project.organization, "prod")
    assert total(tsdb.get_range(project, "received", start, now, rollup=3600)) == 5
    assert total(tsdb.get_range(project, "received", now, now, rollup=10)) == 5
    out = io.StringIO()
    call_command("project_stats_flush", "--stats", stdout=out)
    assert "fields buffered in 8 shards" in out.getvalue()
    call_command("project_stats_flush", stdout=io.StringIO())
    assert stored(project) == 5 + 1 and stored(other) == 2  # every stat
    assert tsdb.delete([project]) > 0
    assert stored(project) == 0
    assert total(tsdb.get_range(project, "received", now, now, rollup=10)) == 0
    assert total(tsdb.get_range(other, "received", start, now, rollup=3600)) == 2
    # Nothing was refused along the way, not even what redis-py sends on connect.
    assert redis_server.command("ACL", "LOG") == []


@pytest.mark.django_db(transaction=True)
def test_the_documented_least_privilege_user_serves_a_cluster(
    settings: Any, killable_cluster: Any, now: datetime
) -> None:
    """The same ACL on every node: redis-py's cluster client finds the nodes
    and the slots with it, and every command goes through."""
    config = buffer_settings("cluster", killable_cluster.url)
    prefix = config["PREFIX"]
    rules = [
        word.replace("{project_stats:", "{" + prefix + ":").replace(">PASSWORD", ">secret")
        for word in documented_acl()[3:]
    ]
    for port in killable_cluster.ports:
        killable_cluster.command(port, "ACL", "SETUSER", "project_stats", *rules)
        killable_cluster.command(port, "ACL", "LOG", "RESET")
    url = f"redis://project_stats:secret@127.0.0.1:{killable_cluster.ports[0]}/0"
    settings.PROJECT_STATS = {"BUFFER": {**config, "URL": url}}
    assert ours(check_buffer_redis()) == []
    projects = [ProjectFactory() for _ in range(8)]
    tsdb.incr_many([(project, "received", now, 2) for project in projects])
    assert total(tsdb.get_range(projects[0], "received", now, now, rollup=10)) == 2
    call_command("project_stats_flush", "--stats", stdout=io.StringIO())
    call_command("project_stats_flush", stdout=io.StringIO())
    assert [stored(project) for project in projects] == [2] * 8
    assert tsdb.delete(projects[:2]) > 0
    for port in killable_cluster.ports:
        assert killable_cluster.command(port, "ACL", "LOG") == ""


@pytest.mark.django_db(transaction=True)
def test_a_user_without_info_is_named_with_the_grant_and_still_flushes(
    settings: Any,
    redis_server: RedisServer,
    now: datetime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_server.command("ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-@dangerous")
    project = ProjectFactory()
    config = use(settings, redis_server.url)
    tsdb.incr(project, "received", timestamp=now, count=4)  # as the default user
    url = f"redis://app:secret@127.0.0.1:{redis_server.port}/0"
    settings.PROJECT_STATS = {"BUFFER": {**config, "URL": url}}
    found = {m.id: m for m in check_buffer_redis()}
    assert "project_stats.E027" in found and "+info" in (found["project_stats.E027"].hint or "")
    with pytest.raises(tsdb.BufferUnavailable, match=r"may not run INFO.*\+info"):
        tsdb.incr(project, "received", timestamp=now)
    caplog.set_level(logging.ERROR, logger="project_stats.flush")
    err = io.StringIO()
    call_command("project_stats_flush", stdout=io.StringIO(), stderr=err)
    assert "+info" in err.getvalue()
    assert any("project_stats.E027" in r.getMessage() for r in caplog.records)
    assert stored(project) == 4  # flushes need no INFO
    settings.PROJECT_STATS = {"BUFFER": {**config, "URL": url, "ON_ERROR": "database"}}
    tsdb.incr(project, "received", timestamp=now, count=6)
    assert stored(project) == 10


@pytest.mark.django_db
def test_a_write_refused_for_a_permission_names_it(
    settings: Any, redis_server: RedisServer, project: Project, now: datetime
) -> None:
    redis_server.command("ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all")
    use(settings, f"redis://app:secret@127.0.0.1:{redis_server.port}/0")
    tsdb.incr(project, "received", timestamp=now)  # probed: INFO allowed
    redis_server.command("ACL", "SETUSER", "app", "-info")
    with pytest.raises(tsdb.BufferUnavailable) as raised:
        tsdb.incr(project, "received", timestamp=now)
    message = str(raised.value)
    assert "may not run a command of the write script (INFO" in message
    assert "+info" in message and "NOPERM" not in message
    assert "nothing of 1 parts was recorded" in message
    assert total(tsdb.get_range(project, "received", now, now, rollup=3600)) == 1
    assert buffer_module.enabled()


@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_what_accepted_eviction_loses(settings: Any, server: RedisServer, policy: str) -> None:
    """The durability table's rows for ``ACCEPT_EVICTION``: 3,000 increments
    (9,000 counts) in the last 8 hours written past 1 MB of headroom.
    ``allkeys-*`` loses stored rollups' counts; ``volatile-*`` the Redis-only
    rollups' first (their buckets expire), and keeps the others. ``-s``
    prints the figures."""
    config = use(settings, server.url, ON_ERROR="database", ACCEPT_EVICTION=True)
    if policy.startswith("volatile-") and not buffer_module.redis_only_rollups(config):
        pytest.skip("every rollup stored: no count expires, so a full Redis refuses writes")
    used = int(info(server, "memory")["used_memory"])
    server.command("CONFIG", "SET", "maxmemory", str(used + 2**20))
    server.command("CONFIG", "SET", "maxmemory-policy", policy)
    projects = [ProjectFactory() for _ in range(8)]
    now = datetime.now(UTC)
    sent = recent = 0
    for call in range(150):
        batch = []
        for step in range(20):
            when = now - timedelta(seconds=10 * (call * 20 + step))
            batch.append((projects[(call + step) % 8], "received", when, 3, f"{'e' * 60}{step}"))
            recent += 3 if when > now - timedelta(minutes=50) else 0
        tsdb.incr_many(batch)
        sent += 60
    since = now - timedelta(minutes=50)
    short = sum(total(tsdb.get_range(p, "received", since, now, rollup=10)) for p in projects)
    tsdb.flush()
    hourly = sum(stored(p) for p in projects)
    evicted = info(server, "stats")["evicted_keys"]
    print(
        f"\n{policy}: {hourly} of {sent} hourly counts stored, {short} of {recent} 10 s counts "
        f"of the last 50 minutes readable; {evicted} keys evicted"
    )
    assert evicted > 0
    if policy.startswith("allkeys-"):
        assert hourly < sent
    else:
        assert hourly == sent
    if buffer_module.redis_only_rollups().get(10):
        assert short < recent


@pytest.mark.django_db
def test_a_full_noeviction_redis_refuses_writes_to_on_error(
    settings: Any, server: RedisServer, now: datetime
) -> None:
    used = int(info(server, "memory")["used_memory"])
    server.command("CONFIG", "SET", "maxmemory", str(used + 2**20))
    use(settings, server.url, ON_ERROR="database")
    project = ProjectFactory()
    for call in range(150):
        tsdb.incr_many(
            [
                (
                    project,
                    "received",
                    now - timedelta(hours=call * 20 + step),
                    3,
                    f"e{step:02d}" * 20,
                )
                for step in range(20)
            ]
        )
    tsdb.flush()
    assert stored(project) == 150 * 20 * 3
