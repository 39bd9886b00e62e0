"""The fault-injecting TCP proxy of the buffer tests, in front of a Redis of its own."""

from __future__ import annotations

from typing import Any

import pytest

from .redis_servers import RedisServer
from .tcp_proxy import TcpProxy


def _client(url: str) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retry: each fault must show as it happened.
    return redis.Redis.from_url(
        url, socket_timeout=20, socket_connect_timeout=20, retry=Retry(NoBackoff(), 0)
    )


@pytest.fixture
def proxy(redis_server: RedisServer) -> Any:
    proxy = TcpProxy("127.0.0.1", redis_server.port).start()
    yield proxy
    proxy.stop()


def test_it_forwards_commands_and_replies(redis_server: RedisServer, proxy: TcpProxy) -> None:
    client = _client(proxy.url)
    client.set("k", "v" * 200_000)
    assert client.get("k") == b"v" * 200_000
    assert redis_server.command("STRLEN", "k") == 200_000
    client.close()


def test_a_dropped_reply_leaves_the_command_run(redis_server: RedisServer, proxy: TcpProxy) -> None:
    import redis

    client = _client(proxy.url)
    assert client.incr("n") == 1
    proxy.drop_next_reply(containing=b"INCRBY")
    client.get("n")  # does not match: answered
    with pytest.raises(redis.ConnectionError):
        client.incrby("n", 10)
    assert proxy.dropped == 1
    assert not proxy.armed
    assert redis_server.command("GET", "n") == b"11"
    # One-shot: the next connection works.
    assert client.incr("n") == 12
    client.close()


def test_refused_connections_send_nothing(redis_server: RedisServer, proxy: TcpProxy) -> None:
    import redis

    client = _client(proxy.url)
    assert client.incr("n") == 1
    proxy.refuse()
    with pytest.raises(redis.ConnectionError):
        client.incr("n")
    assert redis_server.command("GET", "n") == b"1"
    proxy.accept()
    assert client.incr("n") == 2
    client.close()


@pytest.mark.parametrize("redis_server", ["rdb", "aof-always", "aof-everysec"], indirect=True)
def test_a_server_killed_and_restarted_reloads_its_files(redis_server: RedisServer) -> None:
    redis_server.command("SET", "before", "1")
    if redis_server.persistence == "rdb":
        redis_server.save()
    else:
        # everysec: wait for the append-only file to be synced.
        redis_server.command("CONFIG", "SET", "appendfsync", "always")
        redis_server.command("SET", "sync", "1")
    copy = redis_server.snapshot_files()
    redis_server.command("SET", "after", "1")
    if redis_server.persistence == "rdb":
        redis_server.save()
    redis_server.kill()
    redis_server.restart()
    assert redis_server.command("EXISTS", "before", "after") == 2
    redis_server.kill()
    redis_server.restore_files(copy)
    redis_server.start()
    assert redis_server.command("EXISTS", "before") == 1
    assert redis_server.command("EXISTS", "after") == 0
