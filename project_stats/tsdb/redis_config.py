"""What the write buffer requires of its Redis server, and how to ask it.

The buffer holds counts that exist nowhere else until they are flushed, so
the server must never evict a key (``maxmemory-policy noeviction``: when full
it refuses writes, which ``ON_ERROR`` handles) and the buffer's user must be
allowed ``INFO`` (the write script reads the server's ``run_id`` with it; see
the incarnation check in :mod:`.buffer.write`). Redis's ACLs put ``INFO`` in
``@dangerous``, so a user made with ``+@all -@dangerous`` has every write
refused.

:func:`probe` asks every primary (with Sentinel, the one the sentinels
name) with ``INFO memory`` (managed services that hide ``CONFIG`` answer it;
``CONFIG GET`` is the fallback), :func:`problems`
says what is wrong with the answers. Three callers: the ``check --deploy``
system check, ``project_stats_flush`` at start (it logs and keeps flushing:
draining Redis is what saves the counts) and :func:`refusals`, which the
buffer's write calls on a process's first write and every
:data:`RECHECK_SECONDS` after.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from .buffer.client import BufferUnavailable, _client, is_sentinel

# The buffer's logger (the buffer package logs there too).
logger = logging.getLogger("project_stats.flush")

SAFE_POLICY = "noeviction"

# The docs' "Redis configuration" (docs/howto/redis.md), and the hint of every message.
ACL_HINT = (
    "ACL SETUSER <user> +info (INFO is in @dangerous); the least-privilege user is in the "
    "docs, docs/howto/redis.md#redis-configuration"
)

# A write probes again this long after its last probe, so a CONFIG SET is noticed.
RECHECK_SECONDS = 300.0
# ...and this soon after a probe Redis could not answer (the write itself
# then meets the outage, and ON_ERROR decides).
RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class ServerConfig:
    """What one Redis primary said about itself.

    ``policy``: its ``maxmemory-policy``, None when it would not say
    (unknown, not unsafe); ``maxmemory`` and ``used_memory`` in bytes, None
    when unknown (``maxmemory`` 0: no limit); ``info_allowed``: whether the
    buffer's user may run ``INFO``; ``refused``: Redis's words when it may not.
    """

    node: str
    policy: str | None
    maxmemory: int | None
    used_memory: int | None
    info_allowed: bool
    refused: str | None = None


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`problems`, with the id of its system check."""

    level: Literal["error", "warning"]
    id: str
    message: str
    hint: str


def _nodes(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(address, client)`` of every primary: one Redis, the one the sentinels
    name (asked now), or each of a cluster's."""
    client = _client(config)
    if is_sentinel(config):
        # Asking the sentinels also closes the idle connections to a former
        # primary, so the probe reaches the one named.
        host, port = client.connection_pool.get_master_address()
        return [(f"{host}:{port}", client)]
    if not config["CLUSTER"]:
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return [(str(where), client)]
    return [
        (f"{node.host}:{node.port}", client.get_redis_connection(node))
        for node in client.get_primaries()
    ]


def _ask(where: str, node: Any) -> ServerConfig:
    from redis.exceptions import ResponseError

    try:
        info = node.info("memory")
    except ResponseError as error:  # NOPERM, or INFO renamed away
        refused = str(error)
    else:
        policy = info.get("maxmemory_policy")
        return ServerConfig(
            node=where,
            policy=str(policy) if policy is not None else None,
            maxmemory=_int(info.get("maxmemory")),
            used_memory=_int(info.get("used_memory")),
            info_allowed=True,
        )
    try:
        values = node.config_get("maxmemory*")
    except ResponseError:
        values = {}
    policy = values.get("maxmemory-policy")
    return ServerConfig(
        node=where,
        policy=str(policy) if policy else None,
        maxmemory=_int(values.get("maxmemory")),
        used_memory=None,
        info_allowed=False,
        refused=refused,
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def probe(config: dict[str, Any]) -> list[ServerConfig]:
    """Ask every primary of the buffer's Redis (one round trip each).

    Raises :class:`~.buffer.BufferUnavailable` when one cannot be reached.
    """
    from redis.exceptions import RedisClusterException, RedisError

    try:
        return [_ask(where, node) for where, node in _nodes(config)]
    except (RedisError, RedisClusterException, OSError) as error:
        # The class name is enough to diagnose; the message may name hosts.
        raise BufferUnavailable(f"Redis is unavailable ({type(error).__name__})") from error


def _size(value: int | None) -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "0 (no limit)"
    return f"{value / 2**20:.1f} MiB"


def _at(servers: list[ServerConfig]) -> str:
    nodes = ", ".join(server.node for server in servers)
    return f"Redis at {nodes}" if len(servers) == 1 else f"the Redis primaries at {nodes}"


# What each family of policies takes from the buffer (the durability table of
# docs/explanation/write-buffer.md).
def _loses(policy: str) -> str:
    if policy.startswith("volatile-"):
        return (
            "it evicts keys with an expiry first: the buckets of the Redis-only rollups, "
            "acknowledged counts that exist nowhere else, and the flushers' leases"
        )
    return "it may evict any buffered count, acknowledged or not, without a word"


def problems(config: dict[str, Any], servers: list[ServerConfig]) -> list[Problem]:
    """What is wrong with ``servers`` for the buffer of ``config``.

    Errors: a user that may not run ``INFO`` (every write would be refused);
    an evicting ``maxmemory-policy`` unless ``ACCEPT_EVICTION``. Warning: a
    policy Redis would not tell (unknown, unless ``ACCEPT_EVICTION``).
    """
    found: list[Problem] = []
    denied = [server for server in servers if not server.info_allowed]
    if denied:
        found.append(
            Problem(
                "error",
                "project_stats.E027",
                f"The buffer's Redis user may not run INFO on {_at(denied)} "
                f"({denied[0].refused}): the write script reads the server's run_id with it, "
                "so every write to the buffer is refused.",
                f"Grant it: {ACL_HINT}.",
            )
        )
    if config.get("ACCEPT_EVICTION"):
        return found
    by_policy: dict[str | None, list[ServerConfig]] = {}
    for server in servers:
        if server.policy != SAFE_POLICY:
            by_policy.setdefault(server.policy, []).append(server)
    setting = "PROJECT_STATS['BUFFER']['ACCEPT_EVICTION'] = True"
    for policy, evicting in by_policy.items():
        if policy is None:
            found.append(
                Problem(
                    "warning",
                    "project_stats.W004",
                    f"The maxmemory-policy of {_at(evicting)} is unknown (neither INFO nor "
                    "CONFIG GET answered): if it evicts, buffered counts are lost silently.",
                    f"Make sure it is {SAFE_POLICY}, then set {setting} to silence this.",
                )
            )
            continue
        first = evicting[0]
        found.append(
            Problem(
                "error",
                "project_stats.E026",
                f"{_at(evicting)} has maxmemory-policy {policy} (maxmemory "
                f"{_size(first.maxmemory)}, used {_size(first.used_memory)}): {_loses(policy)}. "
                "The buffer refuses to write there.",
                f"Set maxmemory-policy {SAFE_POLICY} (when full, Redis then refuses writes "
                f"and ON_ERROR decides), or accept losing counts with {setting}.",
            )
        )
    return found


# Per client configuration and ACCEPT_EVICTION: (when it was probed, whether
# Redis answered, the refusal found or None), and the ids last logged.
_verdicts: dict[tuple[Any, ...], tuple[float, bool, BufferUnavailable | None]] = {}
_logged: dict[tuple[Any, ...], frozenset[str]] = {}
_lock = threading.Lock()


def forget() -> None:
    """Probe again on the next write (tests that reuse a port do)."""
    with _lock:
        _verdicts.clear()
        _logged.clear()


def refusals(config: dict[str, Any], parts: int) -> list[BufferUnavailable]:
    """The write's ``parts`` refused (one error each), or ``[]`` to write them.

    Probes on the process's first write with ``config`` and again every
    :data:`RECHECK_SECONDS` (one round trip per primary then, none
    otherwise). An error of :func:`problems` refuses the write; a warning
    lets it go on; either is logged once (again when the findings change).
    A Redis that cannot be probed lets the write go on: it meets the same
    outage, and ``ON_ERROR`` decides.
    """
    key = (
        str(config["URL"]),
        bool(config["CLUSTER"]),
        float(config["SOCKET_TIMEOUT"]),
        bool(config.get("ACCEPT_EVICTION")),
    )
    now = time.monotonic()
    previous = _verdicts.get(key)
    if previous is not None:
        probed, answered, refusal = previous
        if now - probed < (RECHECK_SECONDS if answered else RETRY_SECONDS):
            return [refusal] * parts if refusal is not None else []
    try:
        found = problems(config, probe(config))
    except BufferUnavailable:
        with _lock:
            _verdicts[key] = (now, False, previous[2] if previous else None)
        return []
    errors = [problem for problem in found if problem.level == "error"]
    refusal = None
    if errors:
        refusal = BufferUnavailable(" ".join(f"{p.message} {p.hint}" for p in errors))
    ids = frozenset(problem.id for problem in found)
    with _lock:
        _verdicts[key] = (now, True, refusal)
        fresh = _logged.get(key) != ids
        _logged[key] = ids
    for problem in found if fresh else ():
        log = logger.error if problem.level == "error" else logger.warning
        log("%s %s (%s)", problem.message, problem.hint, problem.id)
    return [refusal] * parts if refusal is not None else []


def permission_message(error: Exception) -> str | None:
    """A clear message for a write script Redis refused for the user's ACL, else None.

    Redis names neither the command nor the key a script was refused; the
    only command of the write script outside ``+@all -@dangerous`` is INFO.
    """
    text = str(error)
    if "can't run this command" in text or "no permissions to run" in text:
        return (
            "Redis refused the write: the buffer's Redis user may not run a command of the "
            f"write script (INFO, which Redis counts as @dangerous). Grant it: {ACL_HINT}."
        )
    if "can't access at least one of the keys" in text or "no permissions to access" in text:
        return (
            "Redis refused the write: the buffer's Redis user may not access its keys. "
            "Grant the key pattern ~{PREFIX:* (PREFIX as in PROJECT_STATS['BUFFER'])."
        )
    return None
