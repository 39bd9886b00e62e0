from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from project_stats import demo, tsdb
from project_stats.models import EventCount, Organization, OrganizationMember, Project
from project_stats.tsdb.rollups import bucket_start

from .factories import ProjectFactory

HOUR = 3600
DAY = 86400
ROLLUPS = ((10, 360), (3600, 168), (86400, 90))

Key = tuple[str, str, str, int, int]


def snapshot() -> dict[Key, int]:
    return {
        (
            r.project.slug,
            r.get_stat_display(),
            r.environment,
            r.rollup,
            int(r.timestamp.timestamp()),
        ): r.count
        for r in EventCount.objects.select_related("project")
    }


def sums_by(
    rows: dict[Key, int], finer: int, coarser: int
) -> tuple[dict[Key, int], dict[Key, int]]:
    """The coarser buckets that have finer ones, and the sums of those finer ones."""
    summed: defaultdict[Key, int] = defaultdict(int)
    for (slug, stat, env, rollup, ts), count in rows.items():
        if rollup == finer:
            summed[(slug, stat, env, coarser, ts - ts % coarser)] += count
    stored = {k: v for k, v in rows.items() if k[3] == coarser and k in summed}
    return stored, dict(summed)


# Pure parts


def test_plan_covers_each_retention_from_a_whole_coarser_bucket(now: datetime) -> None:
    epoch = int(now.timestamp())
    slot, windows = demo.plan(ROLLUPS, epoch, 90)
    assert slot == 10
    ten, hour, day = windows
    assert (ten.first, ten.last) == (bucket_start(epoch - HOUR, HOUR), bucket_start(epoch, 10))
    assert (hour.first, hour.last) == (
        bucket_start(epoch - 7 * DAY, DAY),
        bucket_start(epoch, HOUR),
    )
    assert (day.first, day.last) == (bucket_start(epoch - 90 * DAY, DAY), bucket_start(epoch, DAY))


def test_plan_limits_history_to_days(now: datetime) -> None:
    epoch = int(now.timestamp())
    _, (_, hour, day) = demo.plan(ROLLUPS, epoch, 2)
    assert hour.first == bucket_start(epoch - 2 * DAY, DAY)
    assert day.first == bucket_start(epoch - 2 * DAY, DAY)


def test_plan_refuses_rollups_not_made_of_hours_or_their_divisors(now: datetime) -> None:
    with pytest.raises(ValueError, match="7"):
        demo.plan(((7, 10), (3600, 24)), int(now.timestamp()), 1)
    # Without a sub-hour rollup hours are still split, for the open hour.
    slot, _ = demo.plan(((3600, 24),), int(now.timestamp()), 1)
    assert slot == demo.DEFAULT_SLOT


def test_hours_depend_on_seed_project_and_time_only(now: datetime) -> None:
    hour = bucket_start(now, HOUR)
    pump, other = demo.PROJECTS[0], demo.PROJECTS[1]
    assert demo.hour_counts(0, pump, hour) == demo.hour_counts(0, pump, hour)
    assert demo.hour_counts(0, pump, hour) != demo.hour_counts(1, pump, hour)
    assert demo.hour_counts(0, pump, hour) != demo.hour_counts(0, other, hour)
    assert demo.hour_counts(0, pump, hour) != demo.hour_counts(0, pump, hour + HOUR)


def test_blacklisted_is_the_sum_of_the_inbound_filters(now: datetime) -> None:
    hour = bucket_start(now, HOUR)
    counts = demo.hour_counts(3, demo.PROJECTS[0], hour)
    assert counts[demo.BLACKLISTED] == sum(counts[s] for s in demo.FILTER_SERIES) > 0
    spread = demo.split_hour(3, demo.PROJECTS[0], hour, counts, 10)
    for series, values in spread.items():
        assert len(values) == 360 and sum(values) == counts[series]


def test_seasonality_peaks_on_weekday_afternoons() -> None:
    tuesday = int(datetime.fromisoformat("2024-03-05T00:00:00+00:00").timestamp())
    saturday = tuesday + 4 * DAY
    assert demo.seasonality(tuesday + 15 * HOUR) > demo.seasonality(tuesday + 3 * HOUR)
    assert demo.seasonality(saturday + 15 * HOUR) < demo.seasonality(tuesday + 15 * HOUR)


def test_incidents_are_rare_and_reject_several_times_the_traffic() -> None:
    start = int(datetime.fromisoformat("2024-01-01T00:00:00+00:00").timestamp())
    hours = [start + h * HOUR for h in range(365 * 24)]
    factors = [demo.incident_factor(0, demo.PROJECTS[0], h) for h in hours]
    hit = [f for f in factors if f]
    # About one a fortnight lasting one to three hours.
    assert 10 <= len(hit) <= 120
    assert all(1.5 <= f <= 4.0 for f in hit)


# Loading


@pytest.mark.django_db
def test_load_creates_the_demo_organization_user_and_membership(now: datetime) -> None:
    result = demo.load(now=now, days=3, password="s3cret")
    org = Organization.objects.get(slug="the-interstellar-jurisdiction")
    assert sorted(org.projects.values_list("slug", flat=True)) == sorted(
        ["pump-station", "prime-mover", "the-spoiled-yoghurt"]
    )
    user = get_user_model().objects.get(username="demo")
    assert user.is_staff and user.is_superuser and user.check_password("s3cret")
    member = OrganizationMember.objects.get(organization=org, user=user)
    assert member.role == OrganizationMember.Role.OWNER
    assert result.user_created and result.password == "s3cret" and result.rows > 0


@pytest.mark.django_db
def test_load_makes_up_a_password_each_time_unless_given(now: datetime) -> None:
    first = demo.load(now=now, days=1)
    second = demo.load(now=now, days=1)
    assert first.password != second.password and len(second.password) >= 12
    assert not second.user_created
    assert Client().login(username="demo", password=second.password)


@pytest.mark.django_db
def test_the_spec_example_answers_24_non_zero_hourly_points(now: datetime) -> None:
    demo.load(now=now, days=2)
    project = Project.objects.get(slug="pump-station")
    # The endpoint's default window: the last 24 hours, as Sentry computes it.
    points = tsdb.get_range(project, "received", now - timedelta(days=1, seconds=-1), now, now=now)
    assert len(points) == 24
    assert points[-1][0] == bucket_start(now, HOUR)
    assert all(count > 0 for _, count in points)


@pytest.mark.django_db
def test_every_stat_has_counts_and_generated_is_split_over_environments(now: datetime) -> None:
    demo.load(now=now, days=7)
    rows = snapshot()
    daily = Counter[str]()
    for (_, stat, env, rollup, _), count in rows.items():
        if rollup == DAY and not env:
            daily[stat] += count
    assert {label for _, label in EventCount._meta.get_field("stat").choices} == set(daily)
    assert all(daily.values())
    envs = {env for (_, stat, env, _, _) in rows if stat == "generated"}
    assert envs == {"", "production", "staging"}
    for (slug, stat, env, rollup, ts), count in rows.items():
        if stat == "generated" and not env:
            production = rows.get((slug, stat, "production", rollup, ts), 0)
            staging = rows.get((slug, stat, "staging", rollup, ts), 0)
            assert count == production + staging


@pytest.mark.django_db
def test_rollups_are_consistent_closed_and_open_buckets_alike(now: datetime) -> None:
    demo.load(now=now, days=90)
    rows = snapshot()
    for finer, coarser in ((10, HOUR), (HOUR, DAY)):
        stored, summed = sums_by(rows, finer, coarser)
        assert stored and stored == summed
    epoch = int(now.timestamp())
    # The finer rollups cover their whole retention and nothing after now.
    by_rollup: defaultdict[int, set[int]] = defaultdict(set)
    for _, _, _, rollup, ts in rows:
        by_rollup[rollup].add(ts)
    assert min(by_rollup[10]) == bucket_start(epoch - HOUR, HOUR)
    assert max(by_rollup[10]) <= bucket_start(epoch, 10)
    assert min(by_rollup[HOUR]) == bucket_start(epoch - 7 * DAY, DAY)
    assert len(by_rollup[DAY]) == 91


@pytest.mark.django_db
def test_daily_rejected_has_incident_spikes(now: datetime) -> None:
    demo.load(now=now, days=90)
    project = Project.objects.get(slug="pump-station")
    daily = [
        c for _, c in tsdb.get_range(project, "rejected", now - timedelta(days=89), now, rollup=DAY)
    ]
    typical = sorted(daily)[len(daily) // 2]
    assert sum(c > 3 * typical for c in daily) >= 2


@pytest.mark.django_db
def test_a_rerun_counts_nothing_twice_and_extends_to_the_new_now(now: datetime) -> None:
    demo.load(now=now, days=10, seed=5)
    first = snapshot()
    demo.load(now=now, days=10, seed=5)
    assert snapshot() == first
    later = now + timedelta(hours=3, minutes=20)
    demo.load(now=later, days=10, seed=5)
    extended = snapshot()
    EventCount.objects.all().delete()
    demo.load(now=later, days=10, seed=5)
    assert extended == snapshot()
    # Closed days before the first load's now came back unchanged.
    today = bucket_start(now, DAY)
    for key, count in first.items():
        if key[3] == DAY and key[4] < today:
            assert extended[key] == count
    assert get_user_model().objects.filter(username="demo").count() == 1
    assert OrganizationMember.objects.count() == 1
    assert Project.objects.count() == 3


@pytest.mark.django_db
def test_the_seed_changes_the_numbers(now: datetime) -> None:
    demo.load(now=now, days=2, seed=1)
    one = snapshot()
    demo.load(now=now, days=2, seed=2)
    assert snapshot() != one


@pytest.mark.django_db
def test_other_projects_keep_their_counts(now: datetime) -> None:
    other = ProjectFactory()
    tsdb.incr(other, "received", timestamp=now, count=7)
    demo.load(now=now, days=1)
    demo.load(now=now, days=1)
    assert EventCount.objects.filter(project=other).count() == 3
    assert set(EventCount.objects.filter(project=other).values_list("count", flat=True)) == {7}


# The command


@pytest.mark.django_db
def test_command_loads_and_reports() -> None:
    out = StringIO()
    call_command(
        "project_stats_demo",
        "--seed=3",
        "--days=2",
        "--now=2024-03-05T13:37:42+00:00",
        "--password=pw-123",
        stdout=out,
    )
    text = out.getvalue()
    assert "the-interstellar-jurisdiction" in text and "pump-station" in text
    assert "2 days up to 2024-03-05 13:37:42 UTC, seed 3" in text
    assert text.strip().splitlines()[-1] == 'Created superuser "demo" with password: pw-123'
    last = EventCount.objects.filter(rollup=10).order_by("-timestamp").first()
    assert last is not None and last.timestamp.isoformat() == "2024-03-05T13:37:40+00:00"


@pytest.mark.django_db
def test_command_accepts_epoch_seconds(now: datetime) -> None:
    call_command("project_stats_demo", f"--now={now.timestamp()}", "--days=1", stdout=StringIO())
    last = EventCount.objects.filter(rollup=10).order_by("-timestamp").first()
    assert last is not None and int(last.timestamp.timestamp()) == bucket_start(now, 10)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "argument",
    [
        "--days=0",
        "--days=x",
        "--now=yesterday",
        "--now=2024-03-05T13:00:00",
        "--now=nan",
        "--seed=x",
    ],
)
def test_command_refuses_bad_arguments(argument: str) -> None:
    with pytest.raises(CommandError):
        call_command("project_stats_demo", argument, stdout=StringIO())
    assert not EventCount.objects.exists()


@pytest.mark.django_db
def test_command_refuses_rollups_it_cannot_fill(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"ROLLUPS": ((7, 10), (3600, 24))}
    with pytest.raises(CommandError, match="divide an hour"):
        call_command("project_stats_demo", stdout=StringIO())
    assert not Organization.objects.exists()


# Someone else's user named demo


def _existing_demo_user(**fields: Any) -> Any:
    return get_user_model().objects.create_user("demo", password="theirs", **fields)


def _unchanged(user: Any) -> None:
    again = get_user_model().objects.get(pk=user.pk)
    assert (again.is_staff, again.is_superuser, again.password) == (
        user.is_staff,
        user.is_superuser,
        user.password,
    )
    assert again.check_password("theirs")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "membership"),
    [
        ({}, None),  # an ordinary user
        ({"is_staff": True, "is_superuser": True}, None),  # a superuser of the site
        ({"is_staff": True}, OrganizationMember.Role.OWNER),  # owner, not superuser
        ({"is_staff": True, "is_superuser": True}, OrganizationMember.Role.MEMBER),
    ],
)
def test_command_refuses_a_demo_user_it_did_not_create(
    fields: dict[str, bool], membership: str | None
) -> None:
    user = _existing_demo_user(**fields)
    if membership is not None:
        org = Organization.objects.create(slug=demo.ORGANIZATION_SLUG, name="Someone's")
        OrganizationMember.objects.create(organization=org, user=user, role=membership)
    organizations = list(Organization.objects.values_list("pk", "name"))
    with pytest.raises(CommandError, match='user "demo" exists.*--force'):
        call_command("project_stats_demo", "--days=1", stdout=StringIO())
    _unchanged(user)
    assert list(Organization.objects.values_list("pk", "name")) == organizations
    assert not Project.objects.exists()
    assert not EventCount.objects.exists()


@pytest.mark.django_db
def test_force_takes_the_user_over() -> None:
    user = _existing_demo_user()
    out = StringIO()
    call_command("project_stats_demo", "--days=1", "--force", "--password=pw-9", stdout=out)
    user.refresh_from_db()
    assert user.is_staff and user.is_superuser and user.check_password("pw-9")
    assert OrganizationMember.objects.get(user=user).role == OrganizationMember.Role.OWNER
    assert out.getvalue().strip().splitlines()[-1] == (
        'Updated superuser "demo" with password: pw-9'
    )


@pytest.mark.django_db
def test_rerunning_the_command_needs_no_force(now: datetime) -> None:
    # `make run` runs it every time.
    for _ in range(3):
        call_command(
            "project_stats_demo", f"--now={now.timestamp()}", "--days=1", stdout=StringIO()
        )
    assert get_user_model().objects.filter(username="demo").count() == 1
    assert OrganizationMember.objects.filter(user__username="demo").count() == 1
