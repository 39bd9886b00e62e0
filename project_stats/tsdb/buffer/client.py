"""Connections to Redis (one server, a cluster, or the primary Sentinel names)
and how a script's failure reads: refused or unreachable ("not run": nothing
of it happened) against sent and unanswered ("may have run").

Behind Redis Sentinel (a ``redis+sentinel://`` URL, see :func:`sentinel_address`)
every new connection asks the sentinels for the primary, so after a failover
writes reach the promoted replica: another incarnation, whose live hashes
the write script closes. A demoted primary's READONLY is a refusal (not run).
Nothing is ever resent by the client: a write whose reply was lost would
count twice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import scripts

logger = logging.getLogger("project_stats.flush")


class BufferUnavailable(Exception):
    """Redis could not be reached (or refused the command); nothing was half-done.

    A write raising it recorded none of the shards it names; see ``ON_ERROR``.
    """


# Clients: one per configuration, shared by the process (redis-py pools are
# thread-safe and reset themselves in a forked child).
_CLIENTS: dict[tuple[str, bool, float], Any] = {}

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelAddress:
    """A ``redis+sentinel://`` URL's parts.

    ``username`` and ``password`` authenticate on the primary; the
    sentinels get ``sentinel_username`` and ``sentinel_password`` (the URL's
    query), or nothing.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None


def is_sentinel(config: dict[str, Any]) -> bool:
    url = config.get("URL")
    return isinstance(url, str) and url.startswith(SENTINEL_SCHEME)


def sentinel_address(url: str) -> SentinelAddress:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    (query: ``sentinel_username``, ``sentinel_password``); ``ValueError`` says what is wrong."""
    from urllib.parse import parse_qsl, unquote

    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"it does not start with {SENTINEL_SCHEME}")
    rest, _, query = url[len(SENTINEL_SCHEME) :].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        username = unquote(name) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        if entry.startswith("["):  # [IPv6]:port
            host, bracket, port = entry[1:].partition("]")
            port = port.removeprefix(":") if bracket else "!"
        else:
            host, colon, port = entry.partition(":")
            if not colon:
                port = str(SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not a sentinel's host:port")
        sentinels.append((host, int(port)))
    parts = path.split("/")
    service = unquote(parts[0])
    if not service:
        raise ValueError("it names no service (the name the sentinels monitor)")
    db = parts[1] if len(parts) > 1 else "0"
    if len(parts) > 2 or not db.isdigit():
        raise ValueError(f"the path after the service must be a database number, got {path!r}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown options {', '.join(unknown)} (known: sentinel_username, sentinel_password)"
        )
    return SentinelAddress(
        tuple(sentinels),
        service,
        int(db),
        username,
        password,
        options.get("sentinel_username") or None,
        options.get("sentinel_password") or None,
    )


def _sentinel_client(url: str, options: dict[str, Any], retry: Any) -> Any:
    """The client of the primary the sentinels of ``url`` name, asked on every new connection."""
    from redis import Connection
    from redis.sentinel import Sentinel, SentinelManagedConnection

    class PrimaryConnection(SentinelManagedConnection):
        """A connection to the sentinels' primary that reads READONLY as Redis's reply.

        redis-py turns it into a ``ConnectionError``, which would make a write
        refused by a demoted primary look "sent, maybe run", and the replies
        pipelined after it lost. :func:`_per_node` disconnects the connection
        instead, so the next one asks the sentinels again.
        """

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            return Connection.read_response(self, *args, **kwargs)

    address = sentinel_address(url)
    sentinel = Sentinel(
        address.sentinels,
        sentinel_kwargs={
            **options,
            "username": address.sentinel_username,
            "password": address.sentinel_password,
            "retry": retry,
        },
    )
    return sentinel.master_for(
        address.service,
        connection_class=PrimaryConnection,
        db=address.db,
        username=address.username,
        password=address.password,
        retry=retry,
        **options,
    )


def _client(config: dict[str, Any]) -> Any:
    key = (str(config["URL"]), bool(config["CLUSTER"]), float(config["SOCKET_TIMEOUT"]))
    client = _CLIENTS.get(key)
    if client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        url, cluster, timeout = key
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        # No retry of a command whose connection broke: a write script that
        # ran before its reply was lost would run twice. A pooled socket to a
        # restarted Redis is replaced before it is used (the pool checks it),
        # so a retry would buy little.
        retry = Retry(NoBackoff(), 0)
        if cluster:
            # The cluster client gives its nodes' connections no retries.
            client = redis.RedisCluster.from_url(url, **options)
        elif url.startswith(SENTINEL_SCHEME):
            # A new connection asks the sentinels for the primary first (a
            # failover is found that way); none to be had is "not run".
            client = _sentinel_client(url, options, retry)
        else:
            client = redis.Redis.from_url(url, retry=retry, **options)
        _CLIENTS[key] = client
    return client


class _Failed(BufferUnavailable):
    """A script that did not answer; ``sent``: Redis may have run it."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def _unavailable(error: BaseException, *, sent: bool) -> _Failed:
    # The class name is enough to diagnose; the message may name hosts.
    return _Failed(f"Redis is unavailable ({type(error).__name__})", sent=sent)


def _eval(client: Any, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """One script on the node holding ``keys``, loading it when the node lacks it."""
    from redis.exceptions import NoScriptError

    try:
        return client.evalsha(scripts.SHA[source], len(keys), *keys, *args)
    except NoScriptError:
        client.script_load(source)
        return client.evalsha(scripts.SHA[source], len(keys), *keys, *args)


Call = tuple[int, Sequence[str], Sequence[Any]]
"""``(shard, keys, args)`` of one script run."""


def _per_node(config: dict[str, Any], source: str, calls: Sequence[Call]) -> list[Any]:
    """Run ``source`` once per call, pipelined: one round trip per Redis node.

    Returns each call's reply, or the exception it met: a ``ResponseError``
    Redis answered (the script did not run, or, ours, undid itself), or a
    :class:`_Failed` whose ``sent`` says whether Redis may have run it (the
    connection broke or timed out after the pipeline was sent) or certainly
    did not (no connection could be made). Nothing is sent twice.
    """
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        MovedError,
        NoScriptError,
        ReadOnlyError,
        RedisClusterException,
        RedisError,
        ResponseError,
        TryAgainError,
    )

    # Cluster clients raise RedisClusterException (not a RedisError) when no
    # node answers, from their construction on.
    failures = (RedisError, RedisClusterException)
    try:
        client = _client(config)
    except failures as error:
        return [_unavailable(error, sent=False) for _ in calls]
    groups: dict[int, tuple[Any, list[int]]] = {}
    if config["CLUSTER"]:
        for index, (_, keys, _args) in enumerate(calls):
            try:
                node = client.get_node_from_key(keys[0])
                node_client = client.get_redis_connection(node)
            except failures as error:
                logger.debug("No node for %s: %r", keys[0], error)
                node_client = None
            groups.setdefault(id(node_client), (node_client, []))[1].append(index)
    else:
        groups[0] = (client, list(range(len(calls))))

    # A write waits for its replicas on the same connection (WAIT covers the
    # connection's own writes): a failover then keeps what it acknowledged.
    replicas = int(config.get("WAIT_REPLICAS") or 0) if source == scripts.WRITE else 0
    replies: list[Any] = [None] * len(calls)
    for node_client, indexes in groups.values():
        if node_client is None:
            for index in indexes:
                replies[index] = _Failed("no Redis Cluster node serves this shard", sent=False)
            continue
        todo = indexes
        for _attempt in range(2):
            pool = node_client.connection_pool
            try:
                # Connected (and checked) before anything is sent: a failure
                # here certainly ran nothing. Behind Sentinel a new connection
                # asks the sentinels for the primary first (no answer, or a
                # primary that cannot be reached, fails here too).
                connection = pool.get_connection()
            except failures as error:
                for index in todo:
                    replies[index] = _unavailable(error, sent=False)
                break
            # A pipeline of our own on that connection: one write, the
            # replies read in order, nothing ever resent.
            results: list[Any] = []
            try:
                sha = scripts.SHA[source]
                commands: list[tuple[Any, ...]] = [
                    ("EVALSHA", sha, len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in todo
                ]
                if replicas:
                    timeout_ms = max(1, round(float(config["WAIT_TIMEOUT"]) * 1000))
                    commands.append(("WAIT", replicas, timeout_ms))
                connection.send_packed_command(connection.pack_commands(commands))
                for _ in todo:
                    try:
                        results.append(connection.read_response())
                    except ResponseError as error:
                        results.append(error)
                if replicas:
                    try:
                        acknowledged = connection.read_response()
                    except ResponseError as error:
                        acknowledged = error
                    if not isinstance(acknowledged, int) or acknowledged < replicas:
                        # Run on the primary, not known to be on a replica:
                        # a failover could lose it, so "may have been recorded".
                        said = (
                            f"{acknowledged} of {replicas}"
                            if isinstance(acknowledged, int)
                            else f"none of {replicas} (WAIT refused: {acknowledged})"
                        )
                        shortfall = _Failed(
                            f"Redis ran the write but {said} replicas acknowledged it "
                            "within WAIT_TIMEOUT",
                            sent=True,
                        )
                        results = [r if isinstance(r, Exception) else shortfall for r in results]
                if any(isinstance(result, ReadOnlyError) for result in results):
                    # A demoted primary (the sentinels' answer came before
                    # the failover, or this connection did): it refused
                    # those scripts, ran none of them. Closed before it goes
                    # back to the pool: the next connection asks the sentinels.
                    connection.disconnect()
            except failures as error:
                connection.disconnect()  # replies may still be on the way
                for index in todo:
                    replies[index] = _unavailable(error, sent=True)
                break
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
            missing = []
            for index, result in zip(todo, results, strict=True):
                replies[index] = result
                if isinstance(result, NoScriptError):
                    missing.append(index)
            if not missing:
                break
            # NOSCRIPT: the script did not run; load it and run those again.
            try:
                node_client.script_load(source)
            except failures as error:
                for index in missing:
                    replies[index] = _unavailable(error, sent=False)
                break
            todo = missing
        for index in indexes:
            reply = replies[index]
            if source not in scripts.NEVER_RESENT and isinstance(
                reply, AskError | TryAgainError | ClusterDownError
            ):
                # A slot that moved (or a cluster healing): the command was
                # refused, not run; the cluster client follows the
                # redirection. Writes are not resent: what the cluster client
                # retries on its own could run twice.
                _, keys, args = calls[index]
                try:
                    replies[index] = _eval(client, source, keys, args)
                except failures as error:
                    replies[index] = _unavailable(error, sent=True)
            elif isinstance(reply, MovedError | AskError | TryAgainError | ClusterDownError):
                if isinstance(reply, MovedError):
                    _follow(client, reply)
                replies[index] = _unavailable(reply, sent=False)
            elif isinstance(reply, RedisError) and not isinstance(reply, ResponseError):
                replies[index] = _unavailable(reply, sent=True)
    return replies


def _follow(client: Any, moved: Exception) -> None:
    """Point the cluster client's slot map at the node a ``MOVED`` names.

    Our pipelines bypass the cluster client's own command path, which is
    where it learns of resharded slots; without this, every later script
    for the slot would go to its old owner and be refused again. The
    refused script itself is not resent (it did not run; ``ON_ERROR`` or
    the caller decides).
    """
    try:
        client.nodes_manager.move_slot(moved)
    except Exception:  # noqa: BLE001 - a redis-py without it: ask for a full refresh
        logger.debug("Could not patch the slot map after %r", moved, exc_info=True)
        with contextlib.suppress(Exception):
            client.nodes_manager.initialize()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _every_reply(config: dict[str, Any], source: str, calls: Sequence[Call]) -> list[Any]:
    """Every call's reply; the first failure raised as :class:`BufferUnavailable`."""
    replies = _per_node(config, source, calls)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply if isinstance(reply, BufferUnavailable) else _unavailable(reply, sent=False)
    return replies
