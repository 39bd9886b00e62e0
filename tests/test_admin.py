from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from project_stats import tsdb
from project_stats.admin import chart_points
from project_stats.models import EventCount, Organization, Project
from project_stats.tsdb.rollups import bucket_start

from .factories import OrganizationMemberFactory, ProjectFactory

pytestmark = pytest.mark.django_db

HOUR = 3600


def change_url(project: Project) -> str:
    return reverse("admin:project_stats_project_change", args=[project.pk])


def svg_attr(html: str, name: str) -> str:
    match = re.search(rf'<svg class="project-stats-chart"[^>]*\b{name}="([^"]*)"', html)
    assert match, f"no chart with {name} in the page"
    return match.group(1)


def bars(html: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        for attrs in re.findall(r'<rect class="bar"([^>]*)>', html)
    ]


def selected(html: str, select_id: str) -> str:
    block = re.search(rf'<select id="{select_id}".*?</select>', html, re.S)
    assert block
    chosen = re.findall(r'<option value="([^"]*)" selected>', block.group(0))
    assert len(chosen) == 1
    return chosen[0]


# Chart windows


@pytest.mark.parametrize(
    ("rollup", "samples", "points"),
    [(10, 360, 360), (3600, 168, 24), (86400, 90, 90), (60, 60, 60), (1, 100_000, 720)],
)
def test_chart_points(rollup: int, samples: int, points: int) -> None:
    assert chart_points(rollup, samples) == points


def test_chart_points_stay_under_max_points(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"MAX_POINTS": 5}
    assert chart_points(3600, 168) == 5


# The project change page


def test_chart_defaults_to_received_hourly_over_24_hours(
    admin_client: Client, project: Project
) -> None:
    now = timezone.now()
    tsdb.incr(project, "received", timestamp=now - timedelta(hours=2), count=7)
    tsdb.incr(project, "received", timestamp=now, count=3)
    tsdb.incr(project, "rejected", timestamp=now, count=100)
    html = admin_client.get(change_url(project)).content.decode()
    assert svg_attr(html, "data-points") == "24"
    assert svg_attr(html, "data-rollup") == "3600"
    assert svg_attr(html, "data-stat") == "received"
    drawn = bars(html)
    assert len(drawn) == 24
    # Rather than tracking the clock, compare with what tsdb says for the drawn buckets.
    stamps = [int(b["data-timestamp"]) for b in drawn]
    assert stamps == [stamps[0] + i * HOUR for i in range(24)]
    assert stamps[-1] >= bucket_start(now, HOUR)
    counts = {int(b["data-timestamp"]): int(b["data-count"]) for b in drawn}
    assert sum(counts.values()) == 10 == int(svg_attr(html, "data-total"))
    assert counts[bucket_start(now - timedelta(hours=2), HOUR)] == 7
    assert selected(html, "project-stats-stat") == "received"
    assert selected(html, "project-stats-resolution") == "1h"
    assert "UTC: 7</title>" in html


@pytest.mark.parametrize(
    ("query", "points", "stat", "resolution"),
    [
        ("?resolution=10s", 360, "received", "10s"),
        ("?resolution=1d&stat=rejected", 90, "rejected", "1d"),
        ("?resolution=24h", 90, "received", "1d"),
        ("?stat=generated", 24, "generated", "1h"),
        ("?stat=web-crawlers&resolution=1h", 24, "web-crawlers", "1h"),
    ],
)
def test_stat_and_resolution_come_from_the_query(
    admin_client: Client, project: Project, query: str, points: int, stat: str, resolution: str
) -> None:
    response = admin_client.get(change_url(project) + query)
    html = response.content.decode()
    assert svg_attr(html, "data-points") == str(points)
    assert len(bars(html)) == points
    assert selected(html, "project-stats-stat") == stat
    assert selected(html, "project-stats-resolution") == resolution


@pytest.mark.parametrize(
    "query",
    [
        "?stat=nope",
        "?stat=",
        "?stat=0",
        "?resolution=60s",
        "?resolution=7x",
        "?resolution=0s",
        "?resolution=99999999999999999999d",
        "?resolution=%00",
        "?stat=%F0%9F%92%A5&resolution=-1h",
        "?stat=received&stat=nope&resolution=1h&resolution=",
    ],
)
def test_bad_choices_fall_back_to_the_defaults(
    admin_client: Client, project: Project, query: str
) -> None:
    response = admin_client.get(change_url(project) + query)
    assert response.status_code == 200
    html = response.content.decode()
    assert svg_attr(html, "data-points") == "24"
    assert selected(html, "project-stats-stat") == "received"
    assert selected(html, "project-stats-resolution") == "1h"


def test_the_default_resolution_follows_the_configured_rollups(
    admin_client: Client,
    project: Project,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    settings.PROJECT_STATS = {"ROLLUPS": ((60, 60), (86400, 30))}
    html = admin_client.get(change_url(project) + "?resolution=1h").content.decode()
    assert svg_attr(html, "data-rollup") == "60"
    assert svg_attr(html, "data-points") == "60"
    assert re.findall(r'<option value="(\w+)"', html.split('id="project-stats-resolution"')[1])[
        :2
    ] == ["1m", "1d"]


def test_svg_numbers_ignore_the_locale(admin_client: Client, project: Project, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LANGUAGE_CODE = "de"
    settings.USE_THOUSAND_SEPARATOR = True
    tsdb.incr(project, "received", count=12_345)
    html = admin_client.get(change_url(project), HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert svg_attr(html, "data-total") == "12345"
    for bar in bars(html):
        for name in ("x", "y", "width", "height"):
            float(bar[name])


def test_a_series_tsdb_refuses_shows_why_instead_of_failing(
    admin_client: Client, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("project_stats.admin.chart_points", lambda rollup, samples: 10_001)
    response = admin_client.get(change_url(project))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<svg class="project-stats-chart"' not in html
    assert '<p class="errornote">the series would have 10001 points' in html


def test_the_add_page_has_no_chart(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:project_stats_project_add"))
    assert response.status_code == 200
    assert b'<svg class="project-stats-chart"' not in response.content


def test_saving_from_a_chart_url_still_saves(admin_client: Client, project: Project) -> None:
    response = admin_client.post(
        change_url(project) + "?stat=rejected&resolution=10s",
        {"organization": project.organization.pk, "slug": project.slug, "name": "Renamed"},
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.name == "Renamed"


def test_staff_without_permission_sees_no_chart(client: Client, project: Project) -> None:
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(change_url(project)).status_code == 403


# Organizations


def test_organization_page_lists_members_and_projects(
    admin_client: Client, project: Project
) -> None:
    member = OrganizationMemberFactory(organization=project.organization)
    url = reverse("admin:project_stats_organization_change", args=[project.organization.pk])
    html = admin_client.get(url).content.decode()
    assert "members-0-user" in html and f'value="{member.user.pk}"' in html
    assert "projects-0-slug" in html and project.slug in html
    assert (
        admin_client.get(reverse("admin:project_stats_organization_changelist")).status_code == 200
    )
    assert admin_client.get(reverse("admin:project_stats_project_changelist")).status_code == 200


# Slugs of digits only: an API path reads them as ids


def test_the_project_admin_refuses_a_slug_of_digits_only(
    admin_client: Client, project: Project
) -> None:
    add = reverse("admin:project_stats_project_add")
    data = {"organization": project.organization.pk, "slug": "2024", "name": "2024"}
    response = admin_client.post(add, data)
    assert response.status_code == 200
    assert "A slug of digits only reads as an id" in response.content.decode()
    assert not Project.objects.filter(slug="2024").exists()
    assert admin_client.post(add, {**data, "slug": "2024-a"}).status_code == 302
    response = admin_client.post(change_url(project), {**data, "slug": "7"})
    assert "A slug of digits only reads as an id" in response.content.decode()
    project.refresh_from_db()
    assert project.slug != "7"


def organization_form(slug: str, **projects: str) -> dict[str, object]:
    data: dict[str, object] = {"slug": slug, "name": "Numbers"}
    for prefix, total in (("members", 0), ("projects", len(projects))):
        data |= {f"{prefix}-TOTAL_FORMS": total, f"{prefix}-INITIAL_FORMS": 0}
    for i, (name, project_slug) in enumerate(projects.items()):
        data |= {f"projects-{i}-slug": project_slug, f"projects-{i}-name": name}
    return data


def test_the_organization_admin_refuses_a_slug_of_digits_only(admin_client: Client) -> None:
    add = reverse("admin:project_stats_organization_add")
    response = admin_client.post(add, organization_form("123"))
    assert response.status_code == 200
    assert "A slug of digits only reads as an id" in response.content.decode()
    # Its project inline too.
    response = admin_client.post(add, organization_form("numbers", web="web", api="99"))
    assert response.status_code == 200
    assert "A slug of digits only reads as an id" in response.content.decode()
    assert not Organization.objects.exists()
    response = admin_client.post(add, organization_form("numbers", web="web", api="api-99"))
    assert response.status_code == 302
    assert sorted(Project.objects.values_list("slug", flat=True)) == ["api-99", "web"]


# Event counts: read-only, filterable


def changelist(client: Client, query: str = "") -> tuple[int, str]:
    response = client.get(reverse("admin:project_stats_eventcount_changelist") + query)
    return response.status_code, response.content.decode()


def test_event_counts_filter_by_rollup_stat_date_and_project(
    admin_client: Client, project: Project
) -> None:
    other = ProjectFactory(slug="elsewhere")
    when = timezone.now().replace(year=2024, month=3, day=5)
    tsdb.incr(project, "received", timestamp=when)
    tsdb.incr(project, "rejected", timestamp=when)
    tsdb.incr(other, "received", timestamp=when)
    assert changelist(admin_client)[1].count('<td class="field-resolution">') == 9
    status, html = changelist(admin_client, "?rollup=3600")
    assert status == 200 and html.count('<td class="field-resolution">1h</td>') == 3
    assert '<td class="field-resolution">10s</td>' not in html
    status, html = changelist(admin_client, "?rollup=3600&stat__exact=1")
    assert html.count('<td class="field-resolution">') == 1
    status, html = changelist(admin_client, f"?q={other.slug}")
    assert html.count('<td class="field-resolution">') == 3
    status, html = changelist(admin_client, "?timestamp__year=2024&timestamp__month=3")
    assert status == 200 and html.count('<td class="field-resolution">') == 9
    status, html = changelist(admin_client, "?timestamp__year=2023")
    assert status == 200 and html.count('<td class="field-resolution">') == 0
    # The filter offers the configured rollups by name.
    assert ">10s</a>" in html and ">1h</a>" in html and ">1d</a>" in html


@pytest.mark.parametrize(
    "query", ["?rollup=abc", "?rollup=7", "?stat__exact=abc", "?timestamp__year=x"]
)
def test_event_count_filters_never_fail(admin_client: Client, project: Project, query: str) -> None:
    tsdb.incr(project, "received")
    status, _ = changelist(admin_client, query)
    assert status in (200, 302)


def test_event_counts_are_read_only(admin_client: Client, project: Project) -> None:
    tsdb.incr(project, "received", count=5)
    row = EventCount.objects.first()
    assert row is not None
    assert admin_client.get(reverse("admin:project_stats_eventcount_add")).status_code == 403
    url = reverse("admin:project_stats_eventcount_change", args=[row.pk])
    assert admin_client.get(url).status_code == 200  # the view page
    assert admin_client.post(url, {"count": 999}).status_code == 403
    delete = reverse("admin:project_stats_eventcount_delete", args=[row.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.count == 5
    status, html = changelist(admin_client)
    assert 'name="action"' not in html  # no bulk delete either
