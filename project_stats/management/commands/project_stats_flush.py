"""Move buffered increments into the database: parse -> ``tsdb.flush`` -> report."""

from __future__ import annotations

import logging
import signal
import time
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections

from project_stats import tsdb
from project_stats.conf import project_stats_settings
from project_stats.tsdb import redis_config

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


class Command(BaseCommand):
    help = (
        "Move the increments waiting in the write buffer (PROJECT_STATS['BUFFER']) into "
        "the database, exactly once. With --loop, keep doing so until SIGTERM or SIGINT."
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
            "--stats",
            action="store_true",
            help="print each shard's buffered fields, oldest delta and last flush; flush nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not tsdb.buffer_enabled():
            raise CommandError("PROJECT_STATS['BUFFER'] is not set: there is nothing to flush.")
        interval = float(options["interval"])
        if not 0 < interval <= 3600:
            raise CommandError("--interval must be more than 0 and at most 3600 seconds")
        if options["stats"]:
            self._stats()
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
        self._loop(interval, int(options["verbosity"]))

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

    def _stats(self) -> None:
        try:
            shards = tsdb.buffer_stats()
        except tsdb.BufferUnavailable as exc:
            raise CommandError(str(exc)) from None
        now = time.time()

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

    def _loop(self, interval: float, verbosity: int) -> None:
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
                    result = tsdb.flush()
                    failures = 0
                    logger.info("Flushed %s.", _describe(result))
                    if verbosity >= 2 or (verbosity >= 1 and result.rows):
                        self.stdout.write(f"Flushed {_describe(result)}.")
                except (tsdb.BufferUnavailable, DatabaseError) as exc:
                    failures += 1
                    # Nothing is lost: what was claimed stays claimed for the next try.
                    logger.warning("Flush failed (%s); retrying.", exc)
                    self.stderr.write(f"Flush failed ({exc}); retrying.")
                    close_old_connections()
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
