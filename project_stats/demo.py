"""Synthetic event counts for a demo organization, written through ``tsdb``.

Every count is a pure function of the seed, the project, the series and the
absolute hour it falls in, never of when the load runs. A load therefore
deletes the demo projects' counts and writes them again up to the new now: the
past comes back identical and only the time since the previous load is new.

The model works per hour: each series draws a Poisson count from a rate with
daily and weekly seasonality and shared per-hour noise; ``rejected`` has a few
incidents (a burst over one to three hours); ``blacklisted`` is the sum of the
inbound-filter stats; ``generated`` comes from two environments. An hour is
split into fine slots only where a sub-hour rollup needs it, and every rollup
is summed from the same hours and slots, so a coarser bucket always equals
the sum of the finer buckets it holds, open buckets included.
"""

from __future__ import annotations

import hashlib
import math
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from . import tsdb
from .models import Organization, OrganizationMember, Project
from .tsdb.rollups import bucket_start

HOUR = 3600
DAY = 86400
# The slot hours are split into when no configured rollup is finer than an hour.
DEFAULT_SLOT = 10

ORGANIZATION_SLUG = "the-interstellar-jurisdiction"
ORGANIZATION_NAME = "The Interstellar Jurisdiction"
USERNAME = "demo"


@dataclass(frozen=True)
class DemoProject:
    slug: str
    name: str
    # Mean ``received`` events per hour before seasonality.
    traffic: float


PROJECTS: tuple[DemoProject, ...] = (
    DemoProject("pump-station", "Pump Station", 2400.0),
    DemoProject("prime-mover", "Prime Mover", 900.0),
    DemoProject("the-spoiled-yoghurt", "The Spoiled Yoghurt", 300.0),
)


@dataclass(frozen=True)
class Series:
    stat: str
    environment: str | None
    # Mean events per hour as a fraction of the project's traffic.
    share: float


# Inbound filters; ``blacklisted`` is their sum.
FILTER_SERIES: tuple[Series, ...] = (
    Series("ip-address", None, 0.004),
    Series("release-version", None, 0.003),
    Series("error-message", None, 0.006),
    Series("browser-extensions", None, 0.008),
    Series("legacy-browsers", None, 0.003),
    Series("localhost", None, 0.002),
    Series("web-crawlers", None, 0.012),
    Series("invalid-csp", None, 0.002),
    Series("cors", None, 0.0015),
    Series("discarded-hash", None, 0.001),
    Series("filtered-transaction", None, 0.005),
)
DRAWN_SERIES: tuple[Series, ...] = (
    Series("received", None, 1.0),
    Series("rejected", None, 0.02),
    Series("generated", "production", 0.85),
    Series("generated", "staging", 0.12),
    *FILTER_SERIES,
)
BLACKLISTED = Series("blacklisted", None, 0.0)
SERIES: tuple[Series, ...] = (*DRAWN_SERIES, BLACKLISTED)

# On average one incident every this many days per project.
INCIDENT_EVERY_DAYS = 12
NOISE_SIGMA = 0.25


def _rng(seed: int, *parts: object) -> random.Random:
    # hash() of a str changes between processes; a digest does not. Made-up
    # numbers need reproducibility, not secrecy.
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean < 30:
        # Knuth's multiplication method: exact, fine for small means.
        limit, k, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def seasonality(hour_epoch: int) -> float:
    """Traffic multiplier of an hour: busiest mid-afternoon UTC, quieter at weekends."""
    hour_of_day = (hour_epoch % DAY) / HOUR
    daily = 1.0 + 0.45 * math.sin(2 * math.pi * (hour_of_day - 9) / 24)
    # Epoch day 0 was a Thursday: days 2 and 3 of each week are Saturday and Sunday.
    weekly = 0.65 if (hour_epoch // DAY) % 7 in (2, 3) else 1.0
    return daily * weekly


def incident_factor(seed: int, project: DemoProject, hour_epoch: int) -> float:
    """How many times the project's traffic is rejected in this hour by an incident (0 if none).

    Whether a day has an incident, when it starts and how long and strong it
    is are drawn per day, so incidents sit at fixed times whatever the load's now.
    """
    day = hour_epoch // DAY
    for start_day in (day, day - 1):
        rng = _rng(seed, "incident", project.slug, start_day)
        if rng.random() >= 1 / INCIDENT_EVERY_DAYS:
            continue
        start = start_day * DAY + rng.randrange(24) * HOUR
        duration = rng.randint(1, 3) * HOUR
        magnitude = rng.uniform(1.5, 4.0)
        if start <= hour_epoch < start + duration:
            return magnitude
    return 0.0


def hour_counts(seed: int, project: DemoProject, hour_epoch: int) -> dict[Series, int]:
    """The counts of every series in one whole hour."""
    rng = _rng(seed, "hour", project.slug, hour_epoch)
    # One noise draw per hour, shared by every series: busy hours are busy for all stats.
    noise = math.exp(rng.gauss(0.0, NOISE_SIGMA) - NOISE_SIGMA**2 / 2)
    traffic = project.traffic * seasonality(hour_epoch) * noise
    counts: dict[Series, int] = {}
    for series in DRAWN_SERIES:
        mean = traffic * series.share
        if series.stat == "rejected":
            mean += traffic * incident_factor(seed, project, hour_epoch)
        counts[series] = _poisson(rng, mean)
    counts[BLACKLISTED] = sum(counts[s] for s in FILTER_SERIES)
    return counts


def split_hour(
    seed: int, project: DemoProject, hour_epoch: int, counts: dict[Series, int], slot: int
) -> dict[Series, list[int]]:
    """Each series' hourly count spread over the hour's ``3600 // slot`` slots.

    Every event lands in one slot, so the slots sum to the hour exactly.
    """
    rng = _rng(seed, "split", project.slug, hour_epoch, slot)
    slots = HOUR // slot
    result: dict[Series, list[int]] = {}
    for series in DRAWN_SERIES:
        spread = [0] * slots
        for _ in range(counts[series]):
            spread[rng.randrange(slots)] += 1
        result[series] = spread
    filters = [result[s] for s in FILTER_SERIES]
    result[BLACKLISTED] = [sum(column) for column in zip(*filters, strict=True)]
    return result


@dataclass(frozen=True)
class Window:
    """The buckets of one rollup to write: starts ``first..last`` (inclusive)."""

    rollup: int
    first: int
    last: int


def plan(rollups: Sequence[tuple[int, int]], now: int, days: int) -> tuple[int, list[Window]]:
    """The slot width and the window of every rollup, ending with the bucket holding ``now``.

    Each rollup covers its retention (at most ``days``), widened back to the
    start of the next coarser bucket so that no coarser bucket is only partly
    covered by finer ones. Every rollup must divide an hour or be a multiple
    of one: ``ValueError`` otherwise.
    """
    widths = [r for r, _ in rollups]
    odd = [r for r in widths if HOUR % r and r % HOUR]
    if odd:
        raise ValueError(
            f"the demo needs rollups that divide an hour or are whole hours, not {odd}"
        )
    sub_hour = [r for r in widths if r < HOUR]
    slot = min(sub_hour) if sub_hour else DEFAULT_SLOT
    windows = []
    for index, (rollup, samples) in enumerate(rollups):
        start = now - min(rollup * samples, days * DAY)
        align = widths[index + 1] if index + 1 < len(widths) else rollup
        windows.append(Window(rollup, bucket_start(start, align), bucket_start(now, rollup)))
    return slot, windows


@dataclass
class ProjectCounts:
    """Every bucket of every planned rollup of one project: ``{rollup: {(series, bucket): n}}``."""

    buckets: dict[int, dict[tuple[Series, int], int]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def items(self, rollup: int) -> Iterator[tuple[Series, int, int]]:
        for (series, bucket), count in self.buckets[rollup].items():
            yield series, bucket, count


def project_counts(
    seed: int, project: DemoProject, rollups: Sequence[tuple[int, int]], now: int, days: int
) -> ProjectCounts:
    """The counts of one project for :func:`plan`'s windows, up to the slot holding ``now``."""
    slot, windows = plan(rollups, now, days)
    now_slot = bucket_start(now, slot)
    first_hour = bucket_start(min(w.first for w in windows), HOUR)
    fine = [w for w in windows if w.rollup < HOUR]
    # Hours that must be split: those under a sub-hour window, and the open one.
    split_from = min((bucket_start(w.first, HOUR) for w in fine), default=bucket_start(now, HOUR))

    result = ProjectCounts()
    for hour in range(first_hour, bucket_start(now, HOUR) + 1, HOUR):
        counts = hour_counts(seed, project, hour)
        if hour >= split_from:
            spread = split_hour(seed, project, hour, counts, slot)
            # Slots after now have not happened yet.
            kept = (now_slot - hour) // slot + 1
            counts = {s: sum(values[:kept]) for s, values in spread.items()}
            for window in fine:
                if hour + HOUR <= window.first or hour > window.last:
                    continue
                for series, values in spread.items():
                    for index in range(min(kept, len(values))):
                        start = hour + index * slot
                        bucket = bucket_start(start, window.rollup)
                        if window.first <= bucket <= window.last and values[index]:
                            key = (series, bucket)
                            table = result.buckets[window.rollup]
                            table[key] = table.get(key, 0) + values[index]
        for window in windows:
            if window.rollup < HOUR:
                continue
            bucket = bucket_start(hour, window.rollup)
            if not window.first <= bucket <= window.last:
                continue
            table = result.buckets[window.rollup]
            for series, count in counts.items():
                if count:
                    table[(series, bucket)] = table.get((series, bucket), 0) + count
    return result


class DemoUserTaken(ValueError):
    """A user named ``demo`` exists that the demo did not create."""


def _made_by_demo(user: Any) -> bool:
    # What a load leaves behind: a superuser owning the demo organization. A
    # user without both is someone else's, and loading would promote it.
    return bool(user.is_superuser) and (
        OrganizationMember.objects.filter(
            organization__slug=ORGANIZATION_SLUG,
            user=user,
            role=OrganizationMember.Role.OWNER,
        ).exists()
    )


@dataclass(frozen=True)
class LoadResult:
    rows: int
    deleted: int
    seconds: float
    password: str
    user_created: bool
    now: datetime


def load(
    *,
    seed: int = 0,
    now: datetime,
    days: int = 90,
    password: str | None = None,
    force: bool = False,
) -> LoadResult:
    """Create (or update) the demo user, organization and projects and replace their counts.

    The user ``demo`` becomes a superuser owning the organization; its password
    is set to ``password`` or a fresh random one, returned either way. An
    existing ``demo`` that is not a superuser owning the demo organization
    (one the demo did not create) raises :class:`DemoUserTaken`, before
    anything is written, unless ``force``.
    """
    started = time.perf_counter()
    rollups = tsdb.get_rollups()
    now_epoch = int(now.timestamp())
    plan(rollups, now_epoch, days)  # fail on unusable rollups before writing anything
    password = password or secrets.token_urlsafe(9)

    with transaction.atomic():
        user_model = get_user_model()
        lookup: dict[str, Any] = {user_model.USERNAME_FIELD: USERNAME}
        user, user_created = user_model._default_manager.get_or_create(**lookup)
        if not user_created and not force and not _made_by_demo(user):
            raise DemoUserTaken(
                f'A user "{USERNAME}" exists that the demo did not create (not a superuser '
                f"owning {ORGANIZATION_SLUG}); loading would make it a superuser and reset "
                "its password."
            )
        user.is_staff = True
        user.is_superuser = True
        user.set_password(password)
        user.save()

        organization, _ = Organization.objects.update_or_create(
            slug=ORGANIZATION_SLUG, defaults={"name": ORGANIZATION_NAME}
        )
        OrganizationMember.objects.update_or_create(
            organization=organization,
            user=user,
            defaults={"role": OrganizationMember.Role.OWNER},
        )
        projects = [
            Project.objects.update_or_create(
                organization=organization, slug=demo.slug, defaults={"name": demo.name}
            )[0]
            for demo in PROJECTS
        ]

        deleted = tsdb.delete(projects)
        rows = 0
        for demo, project in zip(PROJECTS, projects, strict=True):
            counts = project_counts(seed, demo, rollups, now_epoch, days)
            for rollup, _ in rollups:
                rows += tsdb.incr_many(
                    (
                        tsdb.Increment(project, series.stat, bucket, count, series.environment)
                        for series, bucket, count in counts.items(rollup)
                    ),
                    rollups=[rollup],
                )

    return LoadResult(
        rows=rows,
        deleted=deleted,
        seconds=time.perf_counter() - started,
        password=password,
        user_created=user_created,
        now=now,
    )
