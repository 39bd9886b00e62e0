"""The write buffer against one fault at a time, on a Redis of the test's own.

A Redis killed and restarted from a snapshot older than the last flush (RDB,
an append-only file missing its last writes, a replica that was behind), a
reply lost after the write ran, a connection refused before anything was
sent. Counts must come out exactly once; where the client cannot know whether
Redis ran a write, it is told so and nothing is counted twice.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from project_stats import tsdb
from project_stats.models import EventCount
from project_stats.tsdb import buffer as buffer_module

from .factories import ProjectFactory
from .redis_servers import RedisServer, buffer_settings
from .tcp_proxy import TcpProxy

# Flushes run outside any transaction of the test, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

SECOND = 1_700_000_000
ROLLUPS = (10, 3600, 86400)


def use_buffer(settings: Any, url: str, **extra: Any) -> dict[str, Any]:
    config = buffer_settings("single", url, SOCKET_TIMEOUT=5.0, LEASE_SECONDS=1.0, **extra)
    settings.PROJECT_STATS = {**getattr(settings, "PROJECT_STATS", {}), "BUFFER": config}
    return config


def stored(project_ids: list[int]) -> dict[int, int]:
    """Recorded total per rollup (all environments): in the database, and for
    the rollups kept in Redis only, in Redis (their only record)."""
    totals: Counter[int] = Counter(dict.fromkeys(ROLLUPS, 0))
    for rollup, count in EventCount.objects.filter(
        project_id__in=project_ids, environment=""
    ).values_list("rollup", "count"):
        totals[rollup] += count
    for rollup in buffer_module.redis_only_rollups():
        series = tsdb.get_range_total(project_ids, "received", SECOND, SECOND + 600, rollup=rollup)
        totals[rollup] += sum(count for _, count in series)
    return dict(totals)


def read(project_ids: list[int], first: int, last: int) -> dict[int, int]:
    """Total per rollup as reads see it (stored plus buffered)."""
    return {
        rollup: sum(
            count
            for pk in project_ids
            for _, count in tsdb.get_range(pk, "received", first, last, rollup=rollup)
        )
        for rollup in ROLLUPS
    }


def every_rollup(total: int) -> dict[int, int]:
    return dict.fromkeys(ROLLUPS, total)


def flush_all() -> None:
    """Flush until a flush finds nothing (the lease of an earlier flush may be running)."""
    for _ in range(20):
        result = tsdb.flush()
        if not (result.rows or result.batches or result.skipped or result.busy):
            return
        if result.busy:
            time.sleep(0.5)
    raise AssertionError("the buffer did not empty in 20 flushes")


@pytest.mark.parametrize("redis_server", ["rdb", "aof-everysec", "aof-always"], indirect=True)
def test_a_redis_restored_from_before_the_flush_loses_and_doubles_nothing(
    settings: Any, redis_server: RedisServer
) -> None:
    use_buffer(settings, redis_server.url)
    project = ProjectFactory()
    tsdb.incr(project, "received", count=5, timestamp=SECOND)
    # Redis persists the live hash (a snapshot, or the append-only file as it
    # is now); the flush then applies and acknowledges it; Redis dies and
    # comes back from those files: the applied hash reappears.
    if redis_server.persistence == "rdb":
        redis_server.save()
    files = redis_server.snapshot_files()
    flush_all()
    assert stored([project.pk]) == every_rollup(5)
    redis_server.kill()
    redis_server.restore_files(files)
    redis_server.start()
    tsdb.incr(project, "received", count=7, timestamp=SECOND)
    read_before_flush = read([project.pk], SECOND, SECOND)
    flush_all()
    assert stored([project.pk]) == every_rollup(12), "5 flushed, a restart, 7 more"
    assert read_before_flush == every_rollup(12)
    assert read([project.pk], SECOND, SECOND) == every_rollup(12)


@pytest.fixture
def proxy(redis_server: RedisServer) -> Any:
    proxy = TcpProxy("127.0.0.1", redis_server.port).start()
    yield proxy
    proxy.stop()


def _events(project_ids: list[int], n: int) -> list[tuple[int, str, int, int]]:
    """``n`` events of count 1, spread over the projects (their shards) and seconds."""
    return [(project_ids[i % len(project_ids)], "received", SECOND + i, 1) for i in range(n)]


def _warm_up(project_ids: list[int]) -> None:
    """A write and a flush, so the connection is open and the scripts loaded:
    the armed fault then hits the write itself."""
    tsdb.incr(project_ids[0], "received", timestamp=SECOND)
    flush_all()
    assert stored(project_ids) == every_rollup(1)


N = 101


def test_a_write_whose_reply_is_lost_is_not_counted_twice(
    settings: Any, redis_server: RedisServer, proxy: TcpProxy
) -> None:
    use_buffer(settings, proxy.url)
    project_ids = [p.pk for p in ProjectFactory.create_batch(3)]
    _warm_up(project_ids)
    proxy.drop_next_reply(containing=b"EVALSHA")
    raised: tsdb.BufferUnavailable | None = None
    try:
        tsdb.incr_many(_events(project_ids, N))
    except tsdb.BufferUnavailable as error:
        raised = error
    assert proxy.dropped == 1
    flush_all()
    got = {rollup: count - 1 for rollup, count in stored(project_ids).items()}
    if raised is None:
        assert got == every_rollup(N), f"the call returned; {N} sent, stored {got}"
    else:
        assert got in (every_rollup(0), every_rollup(N)), f"raised {raised!r}; stored {got}"


def test_a_lost_reply_with_the_database_fallback_says_it_may_have_been_recorded(
    settings: Any, redis_server: RedisServer, proxy: TcpProxy
) -> None:
    use_buffer(settings, proxy.url, ON_ERROR="database")
    project_ids = [p.pk for p in ProjectFactory.create_batch(3)]
    _warm_up(project_ids)
    proxy.drop_next_reply(containing=b"EVALSHA")
    # Redis ran the write; the client cannot know: no fallback, an error saying so.
    with pytest.raises(tsdb.BufferUnavailable, match="(?i)may have been recorded"):
        tsdb.incr_many(_events(project_ids, N))
    assert proxy.dropped == 1
    flush_all()
    got = {rollup: count - 1 for rollup, count in stored(project_ids).items()}
    assert got == every_rollup(N)


def test_a_refused_connection_falls_back_to_the_database_once(
    settings: Any, redis_server: RedisServer, proxy: TcpProxy
) -> None:
    use_buffer(settings, proxy.url, ON_ERROR="database")
    project_ids = [p.pk for p in ProjectFactory.create_batch(3)]
    _warm_up(project_ids)
    proxy.refuse()  # nothing reaches Redis: the database takes the write
    tsdb.incr_many(_events(project_ids, N))
    # Rollups kept in Redis only have no place in the database: their part
    # of a write Redis cannot take is lost (as with Redis down for reads).
    short = buffer_module.redis_only_rollups()
    expected = {r: 1 if r in short else N + 1 for r in ROLLUPS}
    proxy.accept()
    assert stored(project_ids) == expected
    flush_all()
    assert stored(project_ids) == expected
    assert read(project_ids, SECOND, SECOND + N) == expected
