"""Move buffered increments into the database: parse -> ``tsdb.flush`` -> report."""

from __future__ import annotations

import json
import logging
import signal
import time
from argparse import ArgumentParser
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connections, router

from project_stats import tsdb
from project_stats.conf import project_stats_settings
from project_stats.models import AppliedBatch
from project_stats.tsdb import redis_config
from project_stats.tsdb.buffer import FlushIncomplete

if TYPE_CHECKING:
    from project_stats.metrics import FlusherMetrics

logger = logging.getLogger("project_stats.flush")

# Waits after consecutive failures grow from the interval up to this.
MAX_BACKOFF_SECONDS = 60.0


def _describe(result: tsdb.FlushResult) -> str:
    text = f"{result.rows} rows from {result.batches} batches of {result.shards} shards"
    if result.skipped:
        text += f", {result.skipped} batches already applied"
    if result.busy:
        text += f", {result.busy} shards busy with another flusher"
    if result.lag is not None:
        text += f"; oldest increment waited {result.lag:.1f}s"
    return text


def _failure_kind(error: Exception) -> str:
    """The ``kind`` label of a failed flush."""
    if isinstance(error, tsdb.BufferUnavailable):
        return "redis"
    if isinstance(error, DatabaseError):
        return "database"
    return "other"


class Command(BaseCommand):
    help = (
        "Move the increments waiting in the write buffer (PROJECT_STATS['BUFFER']) into "
        "the database, exactly once. With --loop, keep doing so until SIGTERM or SIGINT, "
        "or until --max-failures flushes in a row failed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="flush every --interval seconds until stopped"
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            metavar="SECONDS",
            help="pause between two flushes with --loop (default: 5)",
        )
        parser.add_argument(
            "--max-failures",
            type=int,
            default=5,
            metavar="N",
            help="with --loop, exit with status 1 after N flushes failed in a row "
            "(default: 5; 0: never)",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="with --loop, serve Prometheus metrics on this port (needs prometheus-client)",
        )
        parser.add_argument(
            "--metrics-addr",
            default="127.0.0.1",
            metavar="ADDR",
            help="address of the metrics server (default: 127.0.0.1)",
        )
        parser.add_argument(
            "--stats",
            action="store_true",
            help="print each shard's buffered fields, oldest delta and last flush; flush nothing",
        )
        parser.add_argument(
            "--json", action="store_true", help="with --stats, one JSON document instead"
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit 0 when Redis, the database and the lag are healthy, else 1 with the "
            "reason; flush nothing",
        )
        parser.add_argument(
            "--max-lag",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help="with --check, the oldest buffered delta's greatest healthy age (default: 300)",
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            default=90.0,
            metavar="PERCENT",
            help="with --check, the share of Redis's maxmemory it may use (default: 90)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not tsdb.buffer_enabled():
            raise CommandError("PROJECT_STATS['BUFFER'] is not set: there is nothing to flush.")
        interval = float(options["interval"])
        if not 0 < interval <= 3600:
            raise CommandError("--interval must be more than 0 and at most 3600 seconds")
        if options["max_failures"] < 0:
            raise CommandError("--max-failures must be 0 (never) or more")
        if options["max_lag"] < 0 or not 0 < options["max_memory"] <= 100:
            raise CommandError("--max-lag must be 0 or more, --max-memory from 0 to 100 (%)")
        if options["metrics_port"] is not None and not options["loop"]:
            raise CommandError("--metrics-port needs --loop")
        if options["json"] and not options["stats"]:
            raise CommandError("--json goes with --stats")
        if options["check"]:
            self._health(float(options["max_lag"]), float(options["max_memory"]))
            return
        if options["stats"]:
            self._stats(as_json=bool(options["json"]))
            return
        self._check_redis()
        if not options["loop"]:
            try:
                result = tsdb.flush()
            except tsdb.BufferUnavailable as exc:
                raise CommandError(str(exc)) from None
            except DatabaseError as exc:
                # The transaction rolled back and the batches stay claimed in
                # Redis: nothing is lost, the next flush applies them.
                raise CommandError(
                    f"The flush failed in the database ({type(exc).__name__}: {exc}). "
                    "Redis keeps the claimed increments; the next flush applies them."
                ) from None
            if int(options["verbosity"]) >= 1:
                self.stdout.write(f"Flushed {_describe(result)}.", self.style.SUCCESS)
            return
        metrics = None
        server = None
        if options["metrics_port"] is not None:
            metrics, server = self._serve_metrics(options["metrics_port"], options["metrics_addr"])
        try:
            self._loop(interval, int(options["max_failures"]), int(options["verbosity"]), metrics)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()

    def _serve_metrics(self, port: int, addr: str) -> tuple[FlusherMetrics, Any]:
        try:
            from project_stats.metrics import FlusherMetrics
        except ImportError as exc:
            raise CommandError(
                f"--metrics-port needs prometheus-client ({exc}): "
                "pip install 'django-project-stats[metrics]'"
            ) from None
        metrics = FlusherMetrics()
        try:
            server = metrics.serve(port, addr)
        except OSError as exc:
            raise CommandError(f"Cannot serve metrics on {addr}:{port}: {exc}") from None
        logger.info("Serving metrics on http://%s:%d/metrics", addr, port)
        return metrics, server

    def _check_redis(self) -> None:
        """Say what is unsafe about the buffer's Redis, then flush anyway:
        draining an evicting Redis is what saves its counts."""
        config = project_stats_settings.BUFFER
        if config is None:
            return
        try:
            found = redis_config.problems(config, redis_config.probe(config))
        except tsdb.BufferUnavailable as exc:
            logger.warning("Could not ask Redis for its eviction policy and permissions: %s", exc)
            return
        for problem in found:
            log = logger.error if problem.level == "error" else logger.warning
            log("%s %s (%s)", problem.message, problem.hint, problem.id)
            self.stderr.write(f"{problem.level.capitalize()}: {problem.message} {problem.hint}")

    def _health(self, max_lag: float, max_memory: float) -> None:
        """One line: ``OK ...`` (exit 0), or every reason it is not (CommandError, exit 1)."""
        config = project_stats_settings.BUFFER
        assert config is not None  # noqa: S101 - handle() checked it
        reasons: list[str] = []
        warnings: list[str] = []
        try:
            servers = redis_config.probe(config)
            shards = tsdb.buffer_stats()
        except tsdb.BufferUnavailable as exc:
            reasons.append(f"Redis unreachable: {exc}")
            servers, shards = [], None
        for problem in redis_config.problems(config, servers):
            text = f"{problem.message} ({problem.id})"
            (reasons if problem.level == "error" else warnings).append(text)
        for server in servers:
            if server.maxmemory and server.used_memory is not None:
                share = 100 * server.used_memory / server.maxmemory
                if share > max_memory:
                    reasons.append(
                        f"Redis at {server.node} uses {share:.0f}% of its maxmemory "
                        f"({server.used_memory / 2**20:.1f} of {server.maxmemory / 2**20:.1f} "
                        f"MiB; limit {max_memory:g}%)"
                    )
        connection = connections[router.db_for_write(AppliedBatch)]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            reasons.append(f"database unreachable ({type(exc).__name__}: {exc})".strip())
        lag = None
        if shards is not None:
            lag = max((s.oldest for s in shards if s.oldest is not None), default=0.0)
            if lag > max_lag:
                reasons.append(
                    f"lag {lag:.0f}s above {max_lag:g}s: the oldest buffered delta waits "
                    "for a flusher"
                )
        warned = "; warning: " + "; ".join(warnings) if warnings else ""
        if reasons:
            raise CommandError(" ".join(("; ".join(reasons) + warned).split()))
        line = f"OK: lag {lag:.1f}s (limit {max_lag:g}s), Redis and the database answer{warned}"
        self.stdout.write(" ".join(line.split()))

    def _stats(self, *, as_json: bool) -> None:
        try:
            shards = tsdb.buffer_stats()
        except tsdb.BufferUnavailable as exc:
            raise CommandError(str(exc)) from None
        now = time.time()
        if as_json:
            oldest = [s.oldest for s in shards if s.oldest is not None]
            flushed = [s.flushed_at for s in shards if s.flushed_at is not None]
            document = {
                "time": now,
                "shards": [
                    {
                        "shard": s.shard,
                        "fields": s.fields,
                        "batches": s.batches,
                        "oldest_seconds": s.oldest,
                        "flushed_at": s.flushed_at,
                        "flush_seconds": s.flush_seconds,
                        "flush_rows": s.flush_rows,
                    }
                    for s in shards
                ],
                "totals": {
                    "shards": len(shards),
                    "fields": sum(s.fields for s in shards),
                    "batches": sum(s.batches for s in shards),
                    "oldest_seconds": max(oldest) if oldest else None,
                    "flushed_at": max(flushed) if flushed else None,
                },
            }
            self.stdout.write(json.dumps(document))
            return

        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        self.stdout.write(
            f"{'shard':>5} {'fields':>8} {'batches':>7} {'oldest s':>8} "
            f"{'flushed s ago':>13} {'flush s':>7} {'rows':>7} {'rows/s':>8}"
        )
        for shard in shards:
            ago = None if shard.flushed_at is None else max(0.0, now - shard.flushed_at)
            rate = "-"
            if shard.flush_rows is not None and shard.flush_seconds:
                rate = f"{shard.flush_rows / shard.flush_seconds:.0f}"
            self.stdout.write(
                f"{shard.shard:>5} {shard.fields:>8} {shard.batches:>7} "
                f"{seconds(shard.oldest):>8} {seconds(ago):>13} "
                f"{seconds(shard.flush_seconds):>7} "
                f"{'-' if shard.flush_rows is None else shard.flush_rows:>7} {rate:>8}"
            )
        oldest = [s.oldest for s in shards if s.oldest is not None]
        self.stdout.write(
            f"{sum(s.fields for s in shards)} fields buffered in {len(shards)} shards; "
            f"oldest delta {seconds(max(oldest) if oldest else None)} s."
        )

    def _flush_once(self, verbosity: int, metrics: FlusherMetrics | None) -> None:
        """One flush of the loop; raises what made it fail (after counting it)."""
        started = time.monotonic()
        try:
            result = tsdb.flush()
        except FlushIncomplete as exc:
            if metrics is not None:
                metrics.flushed(exc.result, time.monotonic() - started)
            raise
        except Exception:
            if metrics is not None:
                metrics.duration.observe(time.monotonic() - started)
            raise
        if metrics is not None:
            metrics.flushed(result, time.monotonic() - started)
            try:
                shards = tsdb.buffer_stats()
            except tsdb.BufferUnavailable:
                shards = None  # the next flush meets the outage and counts it
            metrics.succeeded(shards)
        logger.info("Flushed %s.", _describe(result))
        if verbosity >= 2 or (verbosity >= 1 and result.rows):
            self.stdout.write(f"Flushed {_describe(result)}.")

    def _loop(
        self, interval: float, max_failures: int, verbosity: int, metrics: FlusherMetrics | None
    ) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            # The flush in hand finishes first; the loop then ends.
            stopping = True
            logger.info("Signal %d received; stopping after the current flush.", signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        failures = 0
        try:
            logger.info("Flushing every %.1fs.", interval)
            while not stopping:
                started = time.monotonic()
                try:
                    self._flush_once(verbosity, metrics)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    kind = _failure_kind(exc)
                    if metrics is not None:
                        metrics.failed(kind, failures)
                    # Logged once, on the logger only (its handlers print it): a
                    # Redis outage as a warning (its message says it all), anything
                    # else as an error with its traceback. Nothing is lost: what
                    # was claimed stays claimed for the next try.
                    if kind == "redis":
                        logger.warning("Flush failed (%s); %s.", exc, _next(failures, max_failures))
                    else:
                        logger.error(
                            "Flush failed (%s: %s); %s.",
                            type(exc).__name__,
                            exc,
                            _next(failures, max_failures),
                            exc_info=True,
                        )
                    close_old_connections()
                    if max_failures and failures >= max_failures:
                        raise CommandError(
                            f"{failures} flushes failed in a row; the last: {exc}. "
                            "Exiting so that the supervisor restarts the flusher."
                        ) from None
                wait = (
                    interval if not failures else min(MAX_BACKOFF_SECONDS, interval * 2**failures)
                )
                deadline = started + wait
                while not stopping and time.monotonic() < deadline:
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Stopped.")


def _next(failures: int, max_failures: int) -> str:
    if not max_failures:
        return "retrying"
    if failures >= max_failures:
        return f"{failures} in a row, giving up"
    return f"retrying ({failures} of {max_failures} in a row)"
