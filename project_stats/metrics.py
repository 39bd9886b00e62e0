"""Prometheus metrics of the write buffer (``pip install 'django-project-stats[metrics]'``).

Two sources, one set of names (the "Metrics" table of docs/howto/monitoring.md):

- :class:`FlusherMetrics`: what ``project_stats_flush --loop --metrics-port``
  did, counted in the flusher process and served by prometheus_client's own
  HTTP server from a registry of ours (never the global one).
- :class:`BufferCollector` / :class:`BufferMetricsView`: the buffer's state,
  read from Redis at scrape time by the site, into a registry built per
  scrape. Nothing is kept in the web process, so any number of gunicorn
  workers answer alike without prometheus_client's multiprocess mode.

Only the flusher with ``--metrics-port`` and a site routing the view import
this module; nothing else in the package imports ``prometheus_client``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.http import HttpResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from . import tsdb
from .authentication import BearerTokenAuthentication
from .conf import project_stats_settings
from .exceptions import exception_handler
from .tsdb import redis_config

# Failure kinds of ``project_stats_flush_failures_total``.
FAILURE_KINDS = ("redis", "database", "other")

# A flush of a small backlog takes milliseconds, a large one minutes.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def buffer_lag(shards: list[tsdb.ShardStats]) -> float:
    """Age in seconds of the oldest delta still buffered; 0 when nothing is."""
    return max((shard.oldest for shard in shards if shard.oldest is not None), default=0.0)


class FlusherMetrics:
    """The flusher's counters, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.rows = Counter(
            "project_stats_flush_rows", "Database rows written by flushes.", registry=registry
        )
        self.batches = Counter(
            "project_stats_flush_batches",
            "Buffered batches applied to the database.",
            registry=registry,
        )
        self.shards = Counter(
            "project_stats_flush_shards",
            "Shards claimed that had something to flush.",
            registry=registry,
        )
        self.busy = Counter(
            "project_stats_flush_shards_busy",
            "Shards skipped because another flusher held them.",
            registry=registry,
        )
        self.duration = Histogram(
            "project_stats_flush_duration_seconds",
            "Duration of each flush, failed ones included.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "project_stats_flush_failures",
            "Failed flushes, by kind: redis, database or other.",
            ["kind"],
            registry=registry,
        )
        for kind in FAILURE_KINDS:
            self.failures.labels(kind)  # every kind exported from the start, at 0
        self.consecutive_failures = Gauge(
            "project_stats_flush_consecutive_failures",
            "Flushes failed in a row (the loop exits at --max-failures).",
            registry=registry,
        )
        self.last_success = Gauge(
            "project_stats_flush_last_success_timestamp_seconds",
            "Unix time of the last successful flush.",
            registry=registry,
        )
        self.lag = Gauge(
            "project_stats_buffer_lag_seconds",
            "Age of the oldest delta still buffered (0: nothing is).",
            registry=registry,
        )

    def flushed(self, result: tsdb.FlushResult, seconds: float) -> None:
        """Count what a flush did (a partial one's work too)."""
        self.rows.inc(result.rows)
        self.batches.inc(result.batches)
        self.shards.inc(result.shards)
        self.busy.inc(result.busy)
        self.duration.observe(seconds)

    def succeeded(self, shards: list[tsdb.ShardStats] | None) -> None:
        self.consecutive_failures.set(0)
        self.last_success.set(time.time())
        if shards is not None:
            self.lag.set(buffer_lag(shards))

    def failed(self, kind: str, consecutive: int) -> None:
        self.failures.labels(kind).inc()
        self.consecutive_failures.set(consecutive)

    def serve(self, port: int, addr: str) -> Any:
        """Serve the registry over HTTP from a daemon thread; the server (to ``shutdown()``)."""
        server, _thread = start_http_server(port, addr, registry=self.registry)
        return server


class BufferCollector(Collector):
    """The buffer's state, asked of Redis at each ``collect()``.

    One ``INFO memory`` per primary (the probe of
    :mod:`project_stats.tsdb.redis_config`) and one script per node
    (``tsdb.buffer_stats()``). Redis unreachable: ``project_stats_redis_up 0``
    and nothing else, so the scrape itself succeeds.
    """

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "project_stats_redis_up", "Whether the buffer's Redis answered this scrape."
        )
        config = project_stats_settings.BUFFER
        if config is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            servers = redis_config.probe(config)
            shards = tsdb.buffer_stats()
        except tsdb.BufferUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _gauge(
            "project_stats_buffer_lag_seconds",
            "Age of the oldest delta still buffered (0: nothing is).",
            buffer_lag(shards),
        )
        yield _gauge(
            "project_stats_buffer_fields",
            "Hash fields buffered, live and claimed (about one per series and bucket).",
            sum(shard.fields for shard in shards),
        )
        yield _gauge(
            "project_stats_buffer_batches",
            "Claimed batches waiting to be applied.",
            sum(shard.batches for shard in shards),
        )
        flushed = [shard.flushed_at for shard in shards if shard.flushed_at is not None]
        if flushed:
            yield _gauge(
                "project_stats_buffer_last_flush_timestamp_seconds",
                "Unix time of the last flush of any shard, by any flusher.",
                max(flushed),
            )
        used = GaugeMetricFamily(
            "project_stats_redis_memory_used_bytes",
            "Memory used by each Redis primary (INFO used_memory).",
            labels=["node"],
        )
        limit = GaugeMetricFamily(
            "project_stats_redis_maxmemory_bytes",
            "maxmemory of each Redis primary (0: no limit).",
            labels=["node"],
        )
        for server in servers:
            if server.used_memory is not None:
                used.add_metric([server.node], server.used_memory)
            if server.maxmemory is not None:
                limit.add_metric([server.node], server.maxmemory)
        yield used
        yield limit


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def render_buffer_metrics(accept: str = "") -> tuple[bytes, str]:
    """:class:`BufferCollector` in the format ``accept`` asks (the Prometheus
    text format, or OpenMetrics), from a registry of this call; the body and
    its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BufferCollector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class BufferMetricsView(APIView):
    """``GET``: the write buffer's state in the Prometheus text format.

    For staff users only (``is_staff``): a session, or a bearer token of a
    staff user (any scope). Others get 401 (no credentials) or 403, with a
    JSON ``detail``. Route it in the site's ``urls.py``, e.g.
    ``path("metrics/buffer", BufferMetricsView.as_view())``.
    """

    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]
    throttle_classes: list[Any] = []
    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # The metrics choose their format from Accept themselves; errors (401,
        # 403) are JSON whatever Accept says, never a 406.
        renderer = JSONRenderer()
        return renderer, str(renderer.media_type)

    def get_exception_handler(self) -> Any:
        return exception_handler

    def get(self, request: Request) -> HttpResponse:
        body, content_type = render_buffer_metrics(request.META.get("HTTP_ACCEPT", ""))
        return HttpResponse(body, content_type=content_type)
