"""The write buffer on a Redis that is full, or whose replies go missing
while a refused write is being taken back, on a Redis of the test's own.

A full Redis (``maxmemory`` reached, ``noeviction``) refusing a write is
unavailability, never an overflow: ``ON_ERROR`` decides, and nothing is
counted twice by a retry. Taking back the parts of a refused write must work
on a full Redis too, and a take-back whose reply is lost is never repeated.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import Any

import pytest

from project_stats import tsdb
from project_stats.models import EventCount, Project
from project_stats.tsdb import buffer as buffer_module

from .factories import ProjectFactory
from .redis_servers import RedisServer, buffer_settings
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600
SHARDS = 8
REFUSED_WHOLE = "OutOfMemoryError.*nothing of 1 parts was recorded"


def use_buffer(settings: Any, url: str, **extra: Any) -> dict[str, Any]:
    config = buffer_settings("single", url, SOCKET_TIMEOUT=10.0, SHARDS=SHARDS, **extra)
    settings.PROJECT_STATS = {"BUFFER": config}
    return config


def hourly(project: Project, now: datetime, environment: str | None = None) -> int:
    series = tsdb.get_range(project, "received", now, now, rollup=HOUR, environment=environment)
    return series[-1][1]


def stored(project: Project) -> int:
    return sum(
        EventCount.objects.filter(project=project, rollup=HOUR, environment="").values_list(
            "count", flat=True
        )
    )


def full(server: RedisServer, headroom: int | None = None) -> None:
    """``maxmemory`` (``noeviction``) at what Redis uses now plus ``headroom``
    bytes; without, below any use: Redis refuses every command that may grow it."""
    used = int(server.client().info("memory")["used_memory"])
    server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    server.command("CONFIG", "SET", "maxmemory", "1" if headroom is None else used + headroom)


def roomy(server: RedisServer) -> None:
    server.command("CONFIG", "SET", "maxmemory", "0")


def two_shards(project: Project) -> Project:
    while True:
        other = ProjectFactory(organization=project.organization)
        if other.pk % SHARDS != project.pk % SHARDS:
            return other


@pytest.mark.parametrize("redis_server", ["rdb"], indirect=True)
@pytest.mark.parametrize("on_error", ["raise", "database"])
def test_a_full_redis_refuses_a_write_as_unavailable(
    settings: Any, redis_server: RedisServer, now: datetime, on_error: str
) -> None:
    use_buffer(settings, redis_server.url, ON_ERROR=on_error)
    project = ProjectFactory()
    tsdb.incr(project, "received", timestamp=now, count=2, rollups=[HOUR])  # a live hash
    full(redis_server)
    if on_error == "raise":
        with pytest.raises(tsdb.BufferUnavailable, match=REFUSED_WHOLE):
            tsdb.incr(project, "received", timestamp=now, count=5, rollups=[HOUR])
    else:
        tsdb.incr(project, "received", timestamp=now, count=5, rollups=[HOUR])
        assert stored(project) == 5  # straight to the database
    roomy(redis_server)
    expected = 2 if on_error == "raise" else 7
    assert hourly(project, now) == expected
    tsdb.flush()
    assert stored(project) == expected and hourly(project, now) == expected


@pytest.mark.parametrize("redis_server", ["rdb"], indirect=True)
def test_an_overflow_is_taken_back_on_a_redis_that_filled_up_meanwhile(
    settings: Any, redis_server: RedisServer, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_buffer(settings, redis_server.url)
    project = ProjectFactory()
    other = two_shards(project)
    tsdb.incr(project, "received", timestamp=now, count=2**62, rollups=[HOUR])
    tsdb.incr(other, "received", timestamp=now, count=3, rollups=[HOUR])
    # Redis fills up (other clients' writes) between the write and its take-back.
    write_module = importlib.import_module("project_stats.tsdb.buffer.write")
    take_back = write_module._take_back

    def on_a_full_redis(*args: Any) -> int:
        full(redis_server)
        return int(take_back(*args))

    monkeypatch.setattr(write_module, "_take_back", on_a_full_redis)
    with pytest.raises(ValueError, match="2\\*\\*63 - 1; nothing of this call was recorded"):
        tsdb.incr_many(
            [(other, "received", now, 1), (project, "received", now, 2**62)], rollups=[HOUR]
        )
    roomy(redis_server)
    assert hourly(other, now) == 3
    assert hourly(project, now) == 2**62
    tsdb.flush()
    assert stored(other) == 3 and stored(project) == 2**62


@pytest.fixture
def proxy(redis_server: RedisServer) -> Any:
    proxy = TcpProxy("127.0.0.1", redis_server.port).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("redis_server", ["rdb"], indirect=True)
def test_a_take_back_whose_reply_is_lost_is_not_done_twice(
    settings: Any, redis_server: RedisServer, proxy: TcpProxy, now: datetime
) -> None:
    use_buffer(settings, proxy.url)
    project = ProjectFactory()
    other = two_shards(project)
    tsdb.incr(project, "received", timestamp=now, count=2**62, rollups=[HOUR])
    tsdb.incr(other, "received", timestamp=now, count=3, rollups=[HOUR])
    # Loaded, so the take-back runs when sent (a NOSCRIPT reply lost would
    # leave it not run, and nothing to find out).
    redis_server.command("SCRIPT", "LOAD", buffer_module.scripts.UNDO)
    proxy.drop_next_reply(containing=buffer_module.scripts.SHA[buffer_module.scripts.UNDO].encode())
    with pytest.raises(ValueError, match="2\\*\\*63 - 1.*may stay recorded"):
        tsdb.incr_many(
            [(other, "received", now, 1), (project, "received", now, 2**62)], rollups=[HOUR]
        )
    assert proxy.dropped == 1, "the take-back's reply was not dropped"
    # The take-back ran once (its reply lost): other's 1 is gone, not subtracted twice.
    assert hourly(other, now) == 3
    assert hourly(project, now) == 2**62
    tsdb.flush()
    assert stored(other) == 3 and stored(project) == 2**62


@pytest.mark.parametrize("redis_server", ["rdb"], indirect=True)
def test_a_full_redis_can_still_be_flushed(
    settings: Any, redis_server: RedisServer, now: datetime
) -> None:
    use_buffer(settings, redis_server.url)
    projects = [ProjectFactory() for _ in range(10)]
    tsdb.incr_many([(project, "received", now, 3, "prod") for project in projects])
    full(redis_server)
    # Writes are refused; the flush, which frees memory, is not.
    with pytest.raises(tsdb.BufferUnavailable, match="OutOfMemoryError"):
        tsdb.incr(projects[0], "received", timestamp=now)
    result = tsdb.flush()
    assert result.failed == 0 and result.batches == len({p.pk % SHARDS for p in projects})
    assert [stored(project) for project in projects] == [3] * 10
    assert tsdb.flush().rows == 0
    roomy(redis_server)
    assert [hourly(project, now) for project in projects] == [3] * 10
