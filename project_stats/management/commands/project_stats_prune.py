"""Delete counts past their retention: parse -> ``tsdb.prune`` -> report."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from project_stats import tsdb
from project_stats.tsdb.rollups import format_resolution


class Command(BaseCommand):
    help = (
        "Delete stored counts past their retention: per rollup (seconds, samples), rows "
        "whose bucket starts before now - seconds * samples."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="count the expired rows; delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = bool(options["dry_run"])
        started = time.monotonic()
        removed = tsdb.prune(dry_run=dry_run)
        try:
            forgotten = tsdb.prune_applied_batches(dry_run=dry_run)
        except tsdb.BufferUnavailable as exc:
            raise CommandError(
                f"Counts pruned, but applied batch ids were kept: {exc}. Run it again later."
            ) from None
        elapsed = time.monotonic() - started
        if int(options["verbosity"]) < 1:
            return
        verb = "expired (dry run: nothing deleted)" if dry_run else "deleted"
        for rollup, rows in removed.items():
            self.stdout.write(f"{format_resolution(rollup)}: {rows} rows {verb}")
        total = sum(removed.values())
        if forgotten:
            self.stdout.write(f"{forgotten} applied batch ids of the write buffer {verb}")
        self.stdout.write(f"{total} rows {verb} in {elapsed:.2f}s.", self.style.SUCCESS)
