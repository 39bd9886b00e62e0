"""``manage.py project_stats_demo``: load the demo organization and its counts."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ... import demo
from ...tsdb.rollups import to_datetime


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _time(value: str) -> datetime:
    """Epoch seconds or an ISO 8601 time with an offset."""
    try:
        return to_datetime(float(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset, e.g. {value}+00:00")
    return to_datetime(parsed)


class Command(BaseCommand):
    help = (
        "Create the demo user, organization and projects and load synthetic counts "
        "up to now. Re-running replaces the demo projects' counts: nothing is counted twice."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument(
            "--days", type=_positive_int, default=90, help="days of history (default 90)"
        )
        parser.add_argument(
            "--now",
            type=_time,
            default=None,
            help="load up to this time (epoch seconds or ISO 8601 with offset; default now)",
        )
        parser.add_argument(
            "--password",
            default=None,
            help="password for the demo user (default: a new random one, printed)",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help=f'take over an existing user "{demo.USERNAME}" that the demo did not create '
            "(it becomes a superuser owning the demo organization, with a new password)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = options["now"] or timezone.now()
        try:
            result = demo.load(
                seed=options["seed"],
                now=now,
                days=options["days"],
                password=options["password"],
                force=options["force"],
            )
        except demo.DemoUserTaken as exc:
            raise CommandError(f"{exc} Rename that user, or use --force to take it over.") from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        projects = ", ".join(p.slug for p in demo.PROJECTS)
        self.stdout.write(
            f"Loaded {result.rows} buckets for {demo.ORGANIZATION_SLUG} ({projects}): "
            f"{options['days']} days up to {result.now:%Y-%m-%d %H:%M:%S} UTC, "
            f"seed {options['seed']}, in {result.seconds:.1f} s "
            f"(replaced {result.deleted} earlier buckets)."
        )
        action = "Created" if result.user_created else "Updated"
        self.stdout.write(f'{action} superuser "{demo.USERNAME}" with password: {result.password}')
