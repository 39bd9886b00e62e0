"""Rebuild coarser rollups from finer stored counts: parse -> ``tsdb.backfill`` -> report."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from project_stats import tsdb
from project_stats.constants import STAT_CODES
from project_stats.models import Project
from project_stats.tsdb.rollups import (
    epoch_to_datetime,
    format_resolution,
    parse_resolution,
    parse_time,
)


class ProgressBar:
    """One line redrawn in place; only ever used on a terminal."""

    WIDTH = 30

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out

    def __call__(self, done: int, total: int) -> None:
        filled = self.WIDTH * done // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.out.write(f"\r[{bar}] {done}/{total} chunks", ending="")
        if done == total:
            self.out.write("")
        self.out.flush()


def _resolution(value: str, option: str) -> int:
    try:
        return parse_resolution(value)
    except ValueError:
        raise CommandError(f"{option}: {value!r} is not a resolution such as 10s, 1h, 1d") from None


def _time(value: str, option: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError:
        raise CommandError(
            f"{option}: {value!r} is neither epoch seconds nor ISO 8601 "
            "(e.g. 1709640000 or 2024-03-05T12:00:00Z)"
        ) from None


def _iso(epoch: int) -> str:
    return epoch_to_datetime(epoch).isoformat().replace("+00:00", "Z")


def _project(value: str) -> int:
    org, sep, slug = value.partition("/")
    if not sep or not org or not slug or "/" in slug:
        raise CommandError(f"--project: {value!r} is not ORG/SLUG")
    pk = (
        Project.objects.filter(organization__slug=org, slug=slug)
        .values_list("pk", flat=True)
        .first()
    )
    if pk is None:
        raise CommandError(f"--project: no project {value!r}")
    return pk


def _stat(value: str) -> str:
    if value not in STAT_CODES:
        raise CommandError(f"--stat: unknown stat {value!r}; known: {', '.join(STAT_CODES)}")
    return value


class Command(BaseCommand):
    help = (
        "Rebuild coarser rollups from finer stored counts. Each closed target bucket "
        "becomes max(stored count, sum of its source buckets); --replace sets it to "
        "exactly the source sum where the source is wholly retained."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--since",
            metavar="TS",
            help="epoch seconds or ISO 8601 (UTC unless an offset is given); "
            "default: start of the source rollup's retention",
        )
        parser.add_argument("--until", metavar="TS", help="exclusive end, as --since; default: now")
        parser.add_argument(
            "--rollup",
            dest="rollups",
            action="append",
            metavar="R",
            help="target rollup, e.g. 1h (repeatable); default: every rollup but the finest",
        )
        parser.add_argument(
            "--source",
            metavar="R",
            help="rollup to build from; default: the next finer configured one",
        )
        parser.add_argument(
            "--project",
            dest="projects",
            action="append",
            metavar="ORG/SLUG",
            help="only this project (repeatable)",
        )
        parser.add_argument(
            "--stat",
            dest="stats",
            action="append",
            metavar="NAME",
            help="only this stat (repeatable)",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="set buckets to exactly the source sum, lowering inflated counts",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="write nothing; report what would change"
        )
        parser.add_argument(
            "--flush",
            action="store_true",
            help="first move the increments waiting in the write buffer (PROJECT_STATS"
            "['BUFFER']) into the database: the backfill works on stored counts only",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        rollups = [_resolution(r, "--rollup") for r in options["rollups"] or []] or None
        source = _resolution(options["source"], "--source") if options["source"] else None
        since = _time(options["since"], "--since") if options["since"] else None
        until = _time(options["until"], "--until") if options["until"] else None
        stats = [_stat(s) for s in options["stats"]] if options["stats"] else None
        projects = [_project(p) for p in options["projects"]] if options["projects"] else None
        progress = ProgressBar(self.stdout) if verbosity >= 1 and self.stdout.isatty() else None

        if options["flush"] and options["dry_run"]:
            raise CommandError("--flush writes to the database; it cannot go with --dry-run")
        started = time.monotonic()
        if options["flush"]:
            try:
                flushed = tsdb.flush()
            except tsdb.BufferUnavailable as exc:
                raise CommandError(f"--flush: {exc}") from None
            if verbosity >= 1 and tsdb.buffer_enabled():
                self.stdout.write(f"Flushed {flushed.rows} rows from the write buffer.")
        try:
            results = tsdb.backfill(
                rollups,
                source=source,
                since=since,
                until=until,
                projects=projects,
                stats=stats,
                replace=options["replace"],
                dry_run=options["dry_run"],
                progress=progress,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        elapsed = time.monotonic() - started
        if verbosity >= 1:
            self._report(results, elapsed, dry_run=options["dry_run"])

    def _report(self, results: list[tsdb.BackfillResult], elapsed: float, *, dry_run: bool) -> None:
        if not results:
            self.stdout.write("Nothing to backfill: only one rollup is configured.")
            return
        verb = "would write" if dry_run else "wrote"
        for r in results:
            line = f"{format_resolution(r.rollup)} from {format_resolution(r.source)}: "
            if r.buckets:
                line += (
                    f"{_iso(r.start)} .. {_iso(r.end)} ({r.buckets} buckets per series): "
                    f"examined {r.examined}, {verb} {r.written}"
                )
            else:
                line += "no closed buckets in range"
            if r.skipped:
                line += (
                    f"; left {r.skipped} older buckets alone "
                    f"(not wholly inside the {format_resolution(r.source)} retention)"
                )
            self.stdout.write(line)
        examined = sum(r.examined for r in results)
        written = sum(r.written for r in results)
        summary = (
            f"{examined} buckets examined, {written} rows "
            f"{'would be written (dry run: nothing written)' if dry_run else 'written'}, "
            f"in {elapsed:.2f}s."
        )
        self.stdout.write(summary, self.style.SUCCESS)
