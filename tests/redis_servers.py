"""Real Redis servers for the buffer tests: the one at 127.0.0.1:6379, a
3-node Redis Cluster and standalone servers started here on free loopback
ports (the latter two can be killed and restarted).

Tests skip, saying why, when ``redis-server`` is missing or the server does
not answer, unless ``REQUIRE_REDIS=1`` makes that a failure (as in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SINGLE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when Redis is required."""
    if os.environ.get("REQUIRE_REDIS") == "1":
        pytest.fail(f"Redis is required (REQUIRE_REDIS=1): {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 55000:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair found")


class PortTaken(RuntimeError):
    """A server exited at start: another process took its free port first."""


def _wait(
    predicate: Any, what: str, timeout: float = 20.0, give_up: type[Exception] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as error:  # not up yet
            if give_up is not None and isinstance(error, give_up):
                raise
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Cluster:
    """Three master nodes, no replicas, append-only so a restarted node keeps its data."""

    directory: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    # "always": every write acknowledged is on disk, so a node killed with
    # SIGKILL comes back with all of it.
    appendfsync: str = "everysec"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(  # noqa: S603
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node_dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.processes[port]

        def up() -> bool:
            if process.poll() is not None:  # it exited: the port was taken meanwhile
                raise PortTaken(port)
            return bool(self.command(port, "PING") == "PONG")

        _wait(up, f"redis-server on {port}", 60, give_up=PortTaken)

    def kill_node(self, port: int) -> None:
        """A crash (SIGKILL): only what the append-only file already holds survives."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=20)

    def stop_node(self, port: int) -> None:
        """A clean shutdown (SIGTERM): the append-only file is written out."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    def command(self, port: int, *args: str) -> str:
        out = subprocess.run(  # noqa: S603
            [shutil.which("redis-cli") or "redis-cli", "-p", str(port), *args],
            capture_output=True,
            timeout=10,
            check=True,
        )
        return out.stdout.decode().strip()

    def healthy(self) -> bool:
        return all(
            "cluster_state:ok" in self.command(port, "CLUSTER", "INFO") for port in self.ports
        )

    def wait_healthy(self) -> None:
        _wait(self.healthy, "the cluster to be ok", timeout=30)

    def stop(self) -> None:
        for port in list(self.processes):
            process = self.processes.pop(port)
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(appendfsync: str = "everysec") -> Cluster:
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (apt-get install redis-server)")
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ps-cluster-")), [], appendfsync=appendfsync)
    try:
        # A free port can be taken by another process before the node binds
        # it (tests in other processes start servers too): try fresh ports.
        for attempt in range(3):
            cluster.ports = [_free_port() for _ in range(3)]
            try:
                for port in cluster.ports:
                    cluster.start_node(port)
                break
            except PortTaken:
                for process in cluster.processes.values():
                    process.kill()
                    process.wait(timeout=20)
                cluster.processes.clear()
                if attempt == 2:
                    raise
        subprocess.run(  # noqa: S603
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


PERSISTENCE = ("rdb", "aof-always", "aof-everysec")
"""Modes of a :class:`RedisServer`: snapshots taken only by :meth:`RedisServer.save`,
or an append-only file synced after every write or once a second."""

_PERSISTENCE_ARGS = {
    "rdb": ["--appendonly", "no"],
    "aof-always": ["--appendonly", "yes", "--appendfsync", "always"],
    "aof-everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
}

# What a server keeps on disk, under its data directory.
_PERSISTED = ("dump.rdb", "appendonlydir")


class RedisServer:
    """One ``redis-server`` on a free loopback port, its files in a directory of its own.

    It keeps its port and directory across :meth:`kill` and :meth:`start`, so
    a restart reloads what it had persisted. Never any automatic snapshot:
    in ``rdb`` mode the test takes one with :meth:`save`.
    """

    def __init__(self, persistence: str = "aof-always", extra_args: tuple[str, ...] = ()) -> None:
        if persistence not in _PERSISTENCE_ARGS:
            raise ValueError(f"persistence must be one of {PERSISTENCE}, not {persistence!r}")
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        self.persistence = persistence
        self.extra_args = extra_args
        self.directory = Path(tempfile.mkdtemp(prefix="ps-redis-"))
        self.data = self.directory / "data"
        self.data.mkdir()
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._copies = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> Any:
        """A fresh redis-py client (the caller closes it)."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=20, socket_connect_timeout=20)

    def command(self, *args: Any) -> Any:
        client = self.client()
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def start(self) -> None:
        """Start on the same port and directory; returns once it answers PING
        (after loading its files)."""
        if self.running:
            raise RuntimeError("the server is already running")
        self.process = subprocess.Popen(  # noqa: S603
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data),
                "--save",
                "",
                "--protected-mode",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
                *_PERSISTENCE_ARGS[self.persistence],
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # PING answers LOADING errors while the files load: wait for PONG.
        _wait(lambda: self.command("PING") in (True, b"PONG"), f"redis-server on {self.port}", 60)

    def kill(self) -> None:
        """SIGKILL: what it had not yet written to its files is lost."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        """Kill (if running), then start again: it reloads its files."""
        self.kill()
        self.start()

    def save(self) -> None:
        """Take an RDB snapshot now (SAVE), written to ``dump.rdb``."""
        self.command("SAVE")

    def snapshot_files(self) -> Path:
        """Copy the persistence files aside (the server may be running); returns the copy.

        An append-only file fsynced on every write is consistent at any moment;
        ``dump.rdb`` is replaced atomically by Redis.
        """
        self._copies += 1
        copy = self.directory / f"copy-{self._copies}"
        copy.mkdir()
        for name in _PERSISTED:
            source = self.data / name
            if source.is_dir():
                shutil.copytree(source, copy / name)
            elif source.exists():
                shutil.copy2(source, copy / name)
        return copy

    def restore_files(self, copy: Path) -> None:
        """Put the files of ``copy`` back in place of the current ones (server down):
        the next :meth:`start` comes back as Redis was when they were copied."""
        if self.running:
            raise RuntimeError("restore_files needs the server down (kill it first)")
        for name in _PERSISTED:
            target = self.data / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            source = copy / name
            if source.is_dir():
                shutil.copytree(source, target)
            elif source.exists():
                shutil.copy2(source, target)

    def stop(self) -> None:
        """Kill the server and delete its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server(persistence: str = "aof-always") -> RedisServer:
    server = RedisServer(persistence)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


SENTINEL_SERVICE = "pstest"


@dataclass
class SentinelGroup:
    """A primary, one replica and three sentinels (quorum 2) watching them.

    The sentinels give a primary up after a second of silence
    (``down-after-milliseconds 1000``) and promote the replica.
    """

    directory: Path
    primary: RedisServer
    replica: RedisServer
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The buffer's ``redis+sentinel://`` URL."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0"

    def sentinel(self, port: int) -> Any:
        """A fresh client of one sentinel (the caller closes it)."""
        import redis

        return redis.Redis(port=port, socket_timeout=10, socket_connect_timeout=10)

    def start_sentinel(self, port: int) -> None:
        directory = self.directory / f"sentinel-{port}"
        directory.mkdir(exist_ok=True)
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {directory}\n"
            f"logfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
        )
        self.processes[port] = subprocess.Popen(  # noqa: S603
            [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _sees_everyone(self, port: int) -> bool:
        client = self.sentinel(port)
        try:
            others = client.sentinel_sentinels(SENTINEL_SERVICE)
            replicas = client.sentinel_slaves(SENTINEL_SERVICE)
            master = client.sentinel_master(SENTINEL_SERVICE)
        finally:
            client.close()
        return (
            len(others) == len(self.ports) - 1
            and len(replicas) == 1
            and not (replicas[0]["is_sdown"] or master["is_sdown"])
            and int(replicas[0]["port"]) == self.replica.port
        )

    def wait_ready(self) -> None:
        """Until every sentinel knows the other two, the primary and the replica."""
        for port in self.ports:
            _wait(lambda port=port: self._sees_everyone(port), f"sentinel {port}", timeout=90)
        _wait(
            lambda: self.replica.command("INFO", "replication")["master_link_status"] == "up",
            "the replica to be in sync",
            timeout=60,
        )

    def primary_port(self, sentinel_port: int | None = None) -> int:
        """The primary's port as one sentinel (the first by default) names it."""
        client = self.sentinel(sentinel_port or self.ports[0])
        try:
            _, port = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        finally:
            client.close()
        return int(port)

    def wait_promoted(self, server: RedisServer, timeout: float = 90.0) -> None:
        """Until every sentinel names ``server`` the primary and it says it is one."""

        def promoted() -> bool:
            role = server.command("ROLE")[0]
            return role in (b"master", "master") and all(
                self.primary_port(port) == server.port for port in self.ports
            )

        _wait(promoted, f"the sentinels to promote {server.port}", timeout=timeout)

    def stop(self) -> None:
        for port in list(self.processes):
            process = self.processes.pop(port)
            process.kill()
            process.wait(timeout=10)
        self.primary.stop()
        self.replica.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_sentinel_group() -> SentinelGroup:
    """A :class:`SentinelGroup` on free loopback ports, once every sentinel sees everyone.

    Snapshots only (no append-only file, no automatic save): what a failover
    keeps is what the replica received.
    """
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    primary = RedisServer("rdb")
    replica: RedisServer | None = None
    group: SentinelGroup | None = None
    try:
        primary.start()
        replica = RedisServer("rdb", ("--replicaof", "127.0.0.1", str(primary.port)))
        replica.start()
        group = SentinelGroup(Path(tempfile.mkdtemp(prefix="ps-sentinel-")), primary, replica)
        group.ports = [_free_port() for _ in range(3)]
        for port in group.ports:
            group.start_sentinel(port)
        group.wait_ready()
    except BaseException:
        if group is not None:
            group.stop()
        else:
            primary.stop()
            if replica is not None:
                replica.stop()
        raise
    return group


def check_single() -> None:
    import redis

    try:
        redis.Redis.from_url(SINGLE_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        unavailable(f"no Redis answers at {SINGLE_URL} ({type(error).__name__})")


def redis_only_rollups() -> tuple[int, ...] | None:
    """The buffer's Redis-only rollups in this run: the package's default (the
    10 s rollup) unless ``TEST_STORED_ROLLUPS=1`` keeps every rollup stored."""
    return () if os.environ.get("TEST_STORED_ROLLUPS") == "1" else None


def buffer_settings(kind: str, url: str, **extra: Any) -> dict[str, Any]:
    """``BUFFER`` settings with a key prefix of this test's own."""
    return {
        "URL": url,
        "CLUSTER": kind == "cluster",
        "PREFIX": f"pstest-{uuid.uuid4().hex[:12]}",
        "SHARDS": 8,
        "REDIS_ONLY_ROLLUPS": redis_only_rollups(),
        **extra,
    }


def delete_keys(config: dict[str, Any]) -> None:
    """Delete every key of the buffer ``config`` (on every node of a cluster)."""
    import redis

    pattern = "{" + config["PREFIX"] + ":*"
    if config["CLUSTER"]:
        client: Any = redis.RedisCluster.from_url(config["URL"])
        nodes = [client.get_redis_connection(node) for node in client.get_primaries()]
    else:
        nodes = [redis.Redis.from_url(config["URL"])]
    for node in nodes:
        keys = list(node.scan_iter(match=pattern, count=1000))
        for key in keys:
            node.delete(key)
        node.close()


def redis_only_rows(config: dict[str, Any]) -> dict[tuple[int, int, str, int, int], int]:
    """What the buffer keeps in Redis only, read from the keys themselves (not
    through the package's reads): ``{(project, stat code, environment, rollup,
    bucket): count}``."""
    import redis

    if config["CLUSTER"]:
        client: Any = redis.RedisCluster.from_url(config["URL"])
        nodes = [client.get_redis_connection(node) for node in client.get_primaries()]
    else:
        nodes = [redis.Redis.from_url(config["URL"])]
    rows: dict[tuple[int, int, str, int, int], int] = {}
    for node in nodes:
        for key in node.scan_iter(match="{" + config["PREFIX"] + ":*}:r:*:*", count=1000):
            rollup, epoch, _ = key.decode().rsplit(":", 3)[-3:]  # ...:r:rollup:epoch:group
            for name, value in node.hgetall(key).items():
                pk, stat, environment = name.decode().split(":", 2)
                rows[(int(pk), int(stat), environment, int(rollup), int(epoch))] = int(value)
        node.close()
    return rows


def log_every_command(client: Any) -> None:
    """Make a server of the test's own log every command in its slow log, emptied."""
    client.config_set("slowlog-max-len", 1_000_000)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()


def logged_scripts(client: Any, sha: str) -> list[list[bytes]]:
    """The arguments (after the keys) of every ``EVALSHA sha`` in the slow log,
    oldest first. Redis logs 32 arguments at most, the last one counting the
    rest: those are given as empty strings, so each list has its real length."""
    scripts = []
    for entry in reversed(client.slowlog_get(1_000_000)):
        words = entry["command"].split(b" ")
        if words[:2] != [b"EVALSHA", sha.encode()]:
            continue
        more = re.fullmatch(rb"(.*) \.\.\. \((\d+) more arguments\)", entry["command"])
        if more:
            words = more.group(1).split(b" ") + [b""] * int(more.group(2))
        scripts.append(words[3 + int(words[2]) :])
    return scripts
