"""Real Redis servers for the buffer tests: the one at 127.0.0.1:6379 and a
3-node Redis Cluster started here on free loopback ports.

Tests skip, saying why, when ``redis-server`` is missing or the server does
not answer, unless ``REQUIRE_REDIS=1`` makes that a failure (as in CI).
"""

from __future__ import annotations

import os
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


def _wait(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Cluster:
    """Three master nodes, no replicas, append-only so a restarted node keeps its data."""

    directory: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

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
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: self.command(port, "PING") == "PONG", f"redis-server on {port}")

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


def start_cluster() -> Cluster:
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (apt-get install redis-server)")
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ps-cluster-")), [])
    try:
        cluster.ports = [_free_port() for _ in range(3)]
        for port in cluster.ports:
            cluster.start_node(port)
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


def check_single() -> None:
    import redis

    try:
        redis.Redis.from_url(SINGLE_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        unavailable(f"no Redis answers at {SINGLE_URL} ({type(error).__name__})")


def buffer_settings(kind: str, url: str, **extra: Any) -> dict[str, Any]:
    """``BUFFER`` settings with a key prefix of this test's own."""
    return {
        "URL": url,
        "CLUSTER": kind == "cluster",
        "PREFIX": f"pstest-{uuid.uuid4().hex[:12]}",
        "SHARDS": 8,
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
