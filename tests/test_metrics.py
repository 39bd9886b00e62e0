"""Prometheus metrics of the write buffer (``project_stats.metrics``): the
flusher's endpoint, the site's view, the Grafana dashboard, and a real
Prometheus scraping a real flusher."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from project_stats import tsdb
from project_stats.metrics import BufferCollector, FlusherMetrics
from project_stats.models import EventCount, Project
from project_stats.tsdb import buffer as buffer_module

from .conftest import bearer
from .factories import ApiTokenFactory, UserFactory
from .redis_servers import _free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-buffer-dashboard.json"
PROMETHEUS = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")


def stored_rows(project: Project) -> int:
    return EventCount.objects.filter(project=project).count()


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text exposition."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, KeyError, IndexError, ValueError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
        return str(answer.read().decode())


def test_nothing_imports_prometheus_client_unless_metrics_are_used() -> None:
    code = (
        "import sys, django; django.setup();"
        "import project_stats.management.commands.project_stats_flush, project_stats.views,"
        " project_stats.urls, project_stats.admin, project_stats.checks, project_stats.tsdb;"
        "from django.core.management import call_command;"
        "call_command('check');"
        "assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.django_db(transaction=True)
def test_the_flusher_serves_what_it_flushed(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=3)
    port = _free_port()
    seen: dict[str, float] = {}
    returned = threading.Event()

    def scrape_until_flushed() -> None:
        url = f"http://127.0.0.1:{port}/metrics"

        def flushed() -> dict[str, float] | None:
            if returned.is_set():
                raise AssertionError("the command returned")
            found = samples(get(url))
            return found if found.get("project_stats_flush_rows_total", 0) > 0 else None

        try:
            seen.update(wait_for(flushed, "a flush counted"))
        finally:
            if not returned.is_set():  # the loop's handler turns it into a clean stop
                os.kill(os.getpid(), signal.SIGTERM)

    scraper = threading.Thread(target=scrape_until_flushed)
    out = io.StringIO()
    scraper.start()
    try:
        call_command(
            "project_stats_flush",
            *("--loop", "--interval", "0.2", "--metrics-port", str(port)),
            stdout=out,
        )
    finally:
        returned.set()
        scraper.join(timeout=120)
    assert out.getvalue().rstrip().endswith("Stopped.")
    assert seen["project_stats_flush_rows_total"] == stored_rows(project) > 0
    assert seen["project_stats_flush_batches_total"] == 1
    assert seen["project_stats_flush_shards_total"] == 1
    assert seen["project_stats_flush_duration_seconds_count"] >= 1
    assert seen["project_stats_buffer_lag_seconds"] == 0
    assert seen["project_stats_flush_last_success_timestamp_seconds"] > 0
    for kind in ("redis", "database", "other"):
        assert seen[f"project_stats_flush_failures_total{{kind={kind}}}"] == 0
    # The server stopped with the loop: its port is free again.
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/metrics")


def test_metrics_port_needs_the_loop_and_a_free_port(buffer: dict[str, Any]) -> None:
    with pytest.raises(CommandError, match="--metrics-port needs --loop"):
        call_command("project_stats_flush", "--metrics-port", "9")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"Cannot serve metrics on 127.0.0.1:{port}"):
            call_command("project_stats_flush", "--loop", "--metrics-port", str(port))


# The site's view ---------------------------------------------------------------

pytestmark_urls = pytest.mark.urls("tests.urls_metrics")


@pytestmark_urls
@pytest.mark.django_db(transaction=True)
def test_the_view_is_for_staff_only(buffer: dict[str, Any], project: Project) -> None:
    client = Client()
    anonymous = client.get("/metrics/buffer")
    assert anonymous.status_code == 401
    assert "detail" in anonymous.json() and b"project_stats_" not in anonymous.content
    strict = client.get("/metrics/buffer", HTTP_ACCEPT="application/openmetrics-text")
    assert strict.status_code == 401 and "detail" in strict.json()  # not a 406
    member = ApiTokenFactory(scopes=["org:read", "project:read"])
    refused = client.get("/metrics/buffer", **bearer(member))
    assert refused.status_code == 403 and b"project_stats_" not in refused.content
    assert client.get("/metrics/buffer", **bearer("not-a-token")).status_code == 401
    staff = ApiTokenFactory(user=UserFactory(is_staff=True), scopes=["project:read"])
    assert client.get("/metrics/buffer", **bearer(staff)).status_code == 200
    client.force_login(UserFactory(is_staff=True))
    assert client.get("/metrics/buffer").status_code == 200
    client.force_login(UserFactory())
    assert client.get("/metrics/buffer").status_code == 403


@pytestmark_urls
@pytest.mark.django_db(transaction=True)
def test_the_view_reads_the_buffer_at_scrape_time(
    buffer: dict[str, Any], project: Project, now: datetime, settings: Any
) -> None:
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    answer = client.get("/metrics/buffer", HTTP_ACCEPT="text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=0.0.4")
    openmetrics = client.get("/metrics/buffer", HTTP_ACCEPT="application/openmetrics-text")
    assert openmetrics["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.content.rstrip().endswith(b"# EOF")
    before = samples(answer.content.decode())
    assert before["project_stats_redis_up"] == 1
    assert before["project_stats_buffer_fields"] == 0
    assert before["project_stats_buffer_lag_seconds"] == 0
    assert "project_stats_buffer_last_flush_timestamp_seconds" not in before
    nodes = [k for k in before if k.startswith("project_stats_redis_memory_used_bytes{")]
    assert nodes and all(before[k] > 0 for k in nodes)
    assert [k for k in before if k.startswith("project_stats_redis_maxmemory_bytes{node=")]

    tsdb.incr(project, "received", timestamp=now, count=3)
    during = samples(client.get("/metrics/buffer").content.decode())
    assert during["project_stats_buffer_fields"] > 0
    assert during["project_stats_buffer_lag_seconds"] > 0
    call_command("project_stats_flush", stdout=io.StringIO())
    after = samples(client.get("/metrics/buffer").content.decode())
    assert after["project_stats_buffer_fields"] == 0
    assert after["project_stats_buffer_lag_seconds"] == 0
    assert after["project_stats_buffer_last_flush_timestamp_seconds"] > 0

    settings.PROJECT_STATS = {
        "BUFFER": {**buffer, "URL": f"redis://127.0.0.1:{_free_port()}/0", "CLUSTER": False}
    }
    down = client.get("/metrics/buffer")
    assert down.status_code == 200
    assert samples(down.content.decode()) == {"project_stats_redis_up": 0.0}


# The dashboard and the docs ----------------------------------------------------


def exposed_names() -> set[str]:
    """Every sample name our registries expose (the site's with a flushed shard)."""
    names: set[str] = set()
    flusher = FlusherMetrics()
    for family in flusher.registry.collect():
        names |= {sample.name for sample in family.samples}
    for family in BufferCollector().collect():
        names |= {sample.name for sample in family.samples}
    return names


def family_names() -> set[str]:
    names = {family.name for family in FlusherMetrics().registry.collect()}
    names |= {family.name for family in BufferCollector().collect()}
    # prometheus_client names a counter's family without its _total.
    counters = {f.name for f in FlusherMetrics().registry.collect() if f.type == "counter"}
    return {f"{name}_total" if name in counters else name for name in names}


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


@pytest.mark.django_db(transaction=True)
def test_every_metric_the_dashboard_queries_exists(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=1)
    tsdb.flush()  # a last flush to expose
    exposed = exposed_names()
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    queried = {name for expr in expressions for name in re.findall(r"\bproject_stats_\w+", expr)}
    assert queried and queried <= exposed, queried - exposed
    # ...and it shows every metric (a histogram by its _bucket, _sum or _count).
    missing = {
        name
        for name in family_names()
        if not any(q == name or q.startswith(f"{name}_") for q in queried)
    }
    assert not missing


@pytest.mark.django_db(transaction=True)
def test_the_docs_document_every_metric(
    buffer: dict[str, Any], project: Project, now: datetime
) -> None:
    tsdb.incr(project, "received", timestamp=now, count=1)
    tsdb.flush()
    page = (ROOT / "docs" / "howto" / "monitoring.md").read_text()
    table = page[page.index("| metric | type |") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `(project_stats_\w+)`", table, re.MULTILINE))
    assert documented == family_names()


# A real Prometheus ------------------------------------------------------------


def require_prometheus() -> None:
    if os.access(PROMETHEUS, os.X_OK):
        return
    reason = f"{PROMETHEUS} is missing (apt-get install prometheus, or make prometheus)"
    if os.environ.get("REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"Prometheus is required (REQUIRE_PROMETHEUS=1): {reason}")
    pytest.skip(reason)


class Prometheus:
    """A ``prometheus`` server of the test's own, scraping ``target`` every second."""

    def __init__(self, target: str, directory: Path) -> None:
        self.port = _free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: flusher\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: get(f"http://127.0.0.1:{self.port}/-/ready"), "Prometheus ready")

    def query(self, expression: str) -> float | None:
        """The instant value of ``expression`` (one series), None when it has none."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        answer = json.loads(get(url))
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def flusher_and_prometheus(
    buffer: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[Prometheus, subprocess.Popen[bytes]]]:
    require_prometheus()
    from .manage_process import database_url, start

    port = _free_port()
    flusher = start(
        {"BUFFER": buffer},
        database_url(),
        *("project_stats_flush", "--loop", "--interval", "0.5", "--metrics-port", str(port)),
        log=tmp_path / "flusher.log",
    )
    prometheus = None
    try:
        prometheus = Prometheus(f"127.0.0.1:{port}", tmp_path)
        yield prometheus, flusher
    finally:
        if prometheus is not None:
            prometheus.stop()
        flusher.send_signal(signal.SIGTERM)
        try:
            flusher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            flusher.kill()
            flusher.wait()
        sys.stderr.write((tmp_path / "flusher.log").read_text()[-4000:])


def hold_lease(config: dict[str, Any], project: Project, *, held: bool) -> None:
    """Hold (or give back) the lease of ``project``'s shard, as another flusher would."""
    import redis

    key = f"{buffer_module.keys._tag(config, buffer_module.keys._shard(config, project.pk))}:lease"
    client = redis.Redis.from_url(config["URL"])
    try:
        if held:
            client.set(key, "another-flusher", px=300_000)
        else:
            client.delete(key)
    finally:
        client.close()


@pytest.mark.postgres
@pytest.mark.parametrize("buffer", ["single"], indirect=True)
@pytest.mark.django_db(transaction=True)
def test_prometheus_scrapes_the_flusher(
    buffer: dict[str, Any],
    project: Project,
    now: datetime,
    flusher_and_prometheus: tuple[Prometheus, subprocess.Popen[bytes]],
) -> None:
    prometheus, flusher = flusher_and_prometheus
    rows = "project_stats_flush_rows_total"
    lag = "project_stats_buffer_lag_seconds"
    wait_for(lambda: prometheus.query(f"{rows} == 0") is not None, "a first scrape")
    # Another flusher holds the project's shard: ours skips it and the lag grows.
    hold_lease(buffer, project, held=True)
    tsdb.incr(project, "received", timestamp=now, count=5)
    wait_for(lambda: prometheus.query(f"{lag} > 0") is not None, "the lag seen above 0")
    wait_for(
        lambda: prometheus.query("project_stats_flush_shards_busy_total > 0") is not None,
        "the busy shard counted",
    )
    assert prometheus.query(rows) == 0
    hold_lease(buffer, project, held=False)
    wait_for(lambda: stored_rows(project) > 0, "the flusher's flush", timeout=120)
    expected = stored_rows(project)
    wait_for(lambda: prometheus.query(rows) == expected, f"{rows} == {expected}")
    wait_for(lambda: prometheus.query(lag) == 0, "the lag back to 0")
    assert prometheus.query("project_stats_flush_batches_total") == 1
    assert prometheus.query('sum(project_stats_flush_failures_total{kind="redis"})') == 0
    assert prometheus.query("up{job='flusher'}") == 1
    assert flusher.poll() is None  # still flushing
    flusher.send_signal(signal.SIGTERM)
    assert flusher.wait(timeout=60) == 0  # stopped cleanly, between two flushes
