"""Under a non-UTC ``TIME_ZONE`` (or another active time zone) answers do not change.

Buckets start at UTC boundaries and are epoch seconds; naive ISO 8601 query
times are UTC; ``dateCreated`` is UTC; the admin chart is labelled in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from project_stats import tsdb
from project_stats.models import ApiToken, Project
from project_stats.tsdb.rollups import bucket_start

from ..conftest import bearer

pytestmark = pytest.mark.django_db

HOUR = 3600
DAY = 86400


@pytest.fixture(params=[None, "America/New_York"], ids=["site-time-zone", "activated-new-york"])
def active_time_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The site's TIME_ZONE, or another one activated for the request (e.g. per user)."""
    if request.param is None:
        yield str(timezone.get_current_timezone())
        return
    with timezone.override(request.param):
        yield request.param


@pytest.fixture
def midnight(project: Project) -> int:
    """Yesterday's UTC midnight, with counts 10 minutes before it (3) and after it (5).

    In Kolkata both are on the same local day (05:20 and 05:40), in New York
    too (18:50 and 19:10): only UTC days tell them apart.
    """
    value = bucket_start(timezone.now(), DAY) - DAY
    tsdb.incr(project, "received", timestamp=value - 600, count=3)
    tsdb.incr(project, "received", timestamp=value + 600, count=5)
    return value


def stats(client: Client, project: Project, token: ApiToken, **params: object) -> list[list[int]]:
    url = reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": project.organization.slug,
            "project_id_or_slug": project.slug,
        },
    )
    response = client.get(url, params, **bearer(token))
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


def test_daily_buckets_are_utc_days(
    client: Client, project: Project, member_token: ApiToken, midnight: int, active_time_zone: str
) -> None:
    points = stats(
        client, project, member_token, since=midnight - DAY, until=midnight + DAY, resolution="1d"
    )
    assert all(timestamp % DAY == 0 for timestamp, _ in points)
    assert dict(points)[midnight - DAY] == 3
    assert dict(points)[midnight] == 5


def test_hourly_buckets_start_on_utc_hours(
    client: Client, project: Project, member_token: ApiToken, midnight: int, active_time_zone: str
) -> None:
    points = stats(
        client, project, member_token, since=midnight - 2 * HOUR, until=midnight + 2 * HOUR
    )
    assert all(timestamp % HOUR == 0 for timestamp, _ in points)
    assert dict(points)[midnight - HOUR] == 3
    assert dict(points)[midnight] == 5


def test_naive_iso_times_are_utc(
    client: Client, project: Project, member_token: ApiToken, midnight: int, active_time_zone: str
) -> None:
    def iso(epoch: int) -> str:
        return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()

    by_epoch = stats(
        client, project, member_token, since=midnight - DAY, until=midnight + DAY, resolution="1d"
    )
    by_iso = stats(
        client,
        project,
        member_token,
        since=iso(midnight - DAY),
        until=iso(midnight + DAY),
        resolution="1d",
    )
    assert by_iso == by_epoch


def test_organization_stats_are_utc_days(
    client: Client, project: Project, member_token: ApiToken, midnight: int, active_time_zone: str
) -> None:
    member_token.scopes = ["org:read"]
    member_token.save()
    url = reverse(
        "project_stats:organization-stats",
        kwargs={"organization_id_or_slug": project.organization.slug},
    )
    params = {"since": midnight - DAY, "until": midnight + DAY, "resolution": "1d"}
    response = client.get(url, params, **bearer(member_token))
    assert response.status_code == 200, response.content
    points = dict(response.json())
    assert (points[midnight - DAY], points[midnight]) == (3, 5)


def test_date_created_is_utc(
    client: Client, project: Project, member_token: ApiToken, active_time_zone: str
) -> None:
    member_token.scopes = ["org:read"]
    member_token.save()
    url = reverse(
        "project_stats:organization-projects",
        kwargs={"organization_id_or_slug": project.organization.slug},
    )
    response = client.get(url, **bearer(member_token))
    assert response.status_code == 200, response.content
    (row,) = response.json()
    assert row["dateCreated"].endswith("Z")
    assert datetime.fromisoformat(row["dateCreated"]) == project.date_added


def test_the_admin_chart_is_labelled_in_utc(
    admin_client: Client, project: Project, midnight: int, active_time_zone: str
) -> None:
    url = reverse("admin:project_stats_project_change", args=[project.pk])
    html = admin_client.get(url, {"resolution": "1d"}).content.decode()
    assert '<text class="time-zone"' in html and ">UTC</text>" in html
    stamps = [int(s) for s in re.findall(r'data-timestamp="(\d+)"', html)]
    assert stamps and all(stamp % DAY == 0 for stamp in stamps)
    first = datetime.fromtimestamp(stamps[0], UTC)
    assert f"from {first:%Y-%m-%d %H:%M:%S} to " in html
    # Each bar's tooltip names its UTC day and count.
    day_before = datetime.fromtimestamp(midnight - DAY, UTC)
    assert f"{day_before:%Y-%m-%d} UTC: 3</title>" in html
    assert timedelta(seconds=stamps[-1] - stamps[0]) == timedelta(days=len(stamps) - 1)
