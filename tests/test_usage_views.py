"""The ``stats_v2`` endpoint over HTTP (Django's test client), on both databases.

Counts are written relative to the real clock (the view reads it), on whole
hours a few hours back, and every request names its range explicitly, so an
answer never depends on when the test runs. With TEST_BUFFER set (see
``.ci/run``) every test here runs with the write buffer on as well.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from project_stats import tsdb, usage
from project_stats.models import ApiToken, Organization, Project
from project_stats.tsdb import buffer as buffer_module

from .factories import OrganizationFactory, OrganizationMemberFactory, ProjectFactory, UserFactory
from .redis_servers import buffer_settings, log_every_command, logged_scripts

pytestmark = pytest.mark.django_db

HOUR = 3600
NOT_FOUND = {"detail": "The requested resource does not exist"}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
GRAFANA = {"category": "error", "field": "sum(quantity)", "groupBy": ["outcome", "reason"]}


def url(org: Organization | str) -> str:
    slug = org if isinstance(org, str) else org.slug
    return reverse("project_stats:organization-stats-v2", kwargs={"organization_id_or_slug": slug})


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def base() -> int:
    """A whole hour six hours back: the first interval of most answers here."""
    return int(time.time()) // HOUR * HOUR - 6 * HOUR


@pytest.fixture
def org() -> Organization:
    return OrganizationFactory(slug="acme")


@pytest.fixture
def projects(org: Organization) -> list[Project]:
    # Ids that sort differently as text and as numbers.
    return [
        ProjectFactory(organization=org, pk=900_009),
        ProjectFactory(organization=org, pk=1_000_001),
    ]


@pytest.fixture
def auth(org: Organization) -> dict[str, str]:
    user = OrganizationMemberFactory(organization=org).user
    _, plaintext = ApiToken.objects.issue(user, name="t", scopes=["org:read"])
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


@pytest.fixture
def counts(projects: list[Project], base: int) -> None:
    a, b = projects
    # Project a, first hour: 100 received, 10 rejected, 7 blacklisted of which
    # the filter stats explain 5.
    for stat, count in [
        ("received", 100),
        ("rejected", 10),
        ("blacklisted", 7),
        ("browser-extensions", 3),
        ("web-crawlers", 2),
    ]:
        tsdb.incr(a, stat, count=count, timestamp=base + 60)
    # Second hour: more rejected and filtered than received: accepted clamps at 0.
    for stat, count in [("received", 5), ("rejected", 4), ("legacy-browsers", 3)]:
        tsdb.incr(a, stat, count=count, timestamp=base + HOUR + 59)
    tsdb.incr(a, "generated", count=99, timestamp=base + 60, environment="production")
    tsdb.incr(b, "received", count=50, timestamp=base + 1800)
    tsdb.incr(ProjectFactory(), "received", count=1000, timestamp=base + 60)  # elsewhere


def get(
    client: Client, auth: dict[str, str], org: Organization | str = "acme", **params: Any
) -> Any:
    return client.get(url(org), params, **auth)


def by_groups(body: dict[str, Any], field: str = "sum(quantity)") -> list[tuple[Any, ...]]:
    return [
        (tuple(g["by"].values()), g["series"][field], g["totals"][field]) for g in body["groups"]
    ]


def test_each_outcome_and_reason_from_known_counts(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    response = get(client, auth, **GRAFANA, start=base, end=base + 3 * HOUR, interval="1h")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["start"] == iso(base)
    assert body["end"] == iso(base + 3 * HOUR)
    assert body["intervals"] == [iso(base + i * HOUR) for i in range(3)]
    assert by_groups(body) == [
        # a: 100 - 10 - max(7, 5); then max(0, 5 - 4 - 3); b: 50
        (("accepted", "none"), [133, 0, 0], 133),
        (("filtered", "browser-extensions"), [3, 0, 0], 3),
        (("filtered", "legacy-browsers"), [0, 3, 0], 3),
        (("filtered", "none"), [2, 0, 0], 2),  # blacklisted the filters leave unexplained
        (("filtered", "web-crawlers"), [2, 0, 0], 2),
        (("rate_limited", "none"), [10, 4, 0], 14),
    ]
    assert all(set(g["by"]) == {"outcome", "reason"} for g in body["groups"])


def test_buckets_are_summed_into_the_interval_before_outcomes_are_derived(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    # One 2h interval: a has 105 received, 14 rejected, blacklisted 7 but
    # filters 8, so filtered is 8, none of it unexplained, and accepted 83.
    start = base - base % (2 * HOUR)
    offset = (base - start) // HOUR
    body = get(client, auth, **GRAFANA, start=start, end=start + 4 * HOUR, interval="2h").json()
    assert body["intervals"] == [iso(start), iso(start + 2 * HOUR)]
    groups = {
        g["by"]["outcome"] + "/" + g["by"]["reason"]: g["totals"]["sum(quantity)"]
        for g in body["groups"]
    }
    if offset == 0:  # both hours of a in the first interval
        assert groups == {
            "accepted/none": 133,
            "filtered/browser-extensions": 3,
            "filtered/legacy-browsers": 3,
            "filtered/web-crawlers": 2,
            "rate_limited/none": 14,
        }
    else:  # the first hour alone, the second in the next interval
        assert groups["filtered/none"] == 2


def test_accepted_is_clamped_per_project(
    client: Client, projects: list[Project], auth: dict[str, str], base: int
) -> None:
    a, b = projects
    tsdb.incr(a, "received", count=10, timestamp=base)
    tsdb.incr(b, "received", count=1, timestamp=base)
    tsdb.incr(b, "rejected", count=5, timestamp=base)
    body = get(
        client,
        auth,
        category="error",
        field="sum(quantity)",
        groupBy="outcome",
        start=base,
        end=base + HOUR,
    ).json()
    # b's rejected never lowers a's accepted; b's accepted is 0, not -4.
    assert by_groups(body) == [(("accepted",), [10], 10), (("rate_limited",), [5], 5)]


def test_group_by_project_and_category_sorted_as_tuples(
    client: Client, projects: list[Project], counts: None, auth: dict[str, str], base: int
) -> None:
    a, b = projects
    body = get(
        client,
        auth,
        field="sum(quantity)",
        groupBy=["project", "category", "outcome"],
        start=base,
        end=base + 2 * HOUR,
    ).json()
    assert [tuple(g["by"].values()) for g in body["groups"]] == [
        (a.pk, "error", "accepted"),
        (a.pk, "error", "filtered"),
        (a.pk, "error", "rate_limited"),
        (b.pk, "error", "accepted"),
    ]
    assert isinstance(body["groups"][0]["by"]["project"], int)
    assert body["groups"][-1]["series"] == {"sum(quantity)": [50, 0]}  # series kept
    other_order = get(
        client,
        auth,
        field="sum(quantity)",
        groupBy=["outcome", "project"],
        category="error",
        start=base,
        end=base + 2 * HOUR,
    ).json()
    assert [tuple(g["by"].values()) for g in other_order["groups"]] == [
        ("accepted", a.pk),
        ("accepted", b.pk),
        ("filtered", a.pk),
        ("rate_limited", a.pk),
    ]


def test_without_group_by_exactly_one_group(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    params = {"field": ["sum(quantity)", "sum(times_seen)"], "start": base, "end": base + 2 * HOUR}
    body = get(client, auth, category="error", **params).json()
    total = 83 + 50 + 10 + 4 + 3 + 7  # every event of the acme projects, once
    assert body["groups"] == [
        {
            "by": {},
            "totals": {"sum(quantity)": total, "sum(times_seen)": total},
            "series": {"sum(quantity)": [total - 7, 7], "sum(times_seen)": [total - 7, 7]},
        }
    ]
    for empty in ({"category": "transaction"}, {"category": "error", "outcome": "invalid"}):
        body = get(client, auth, **params, **empty).json()
        assert body["groups"] == [
            {
                "by": {},
                "totals": {"sum(quantity)": 0, "sum(times_seen)": 0},
                "series": {"sum(quantity)": [0, 0], "sum(times_seen)": [0, 0]},
            }
        ]
    # With groupBy, groups of zeros are left out.
    assert (
        get(
            client,
            auth,
            category="replay",
            groupBy="outcome",
            field="sum(quantity)",
            start=base,
            end=base + HOUR,
        ).json()["groups"]
        == []
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"outcome": "ACCEPTED"}, [(("accepted", "none"), 133)]),
        (
            {"outcome": ["filtered", "Rate_Limited"], "reason": "none"},
            [(("filtered", "none"), 2), (("rate_limited", "none"), 14)],
        ),
        (
            {"reason": ["web-crawlers", "legacy-browsers"]},
            [(("filtered", "legacy-browsers"), 3), (("filtered", "web-crawlers"), 2)],
        ),
        ({"outcome": "abuse"}, []),
    ],
)
def test_outcome_and_reason_filters(
    client: Client,
    counts: None,
    auth: dict[str, str],
    base: int,
    params: dict[str, Any],
    expected: list[tuple[Any, ...]],
) -> None:
    body = get(client, auth, **{**GRAFANA, **params}, start=base, end=base + 3 * HOUR).json()
    assert [(k, total) for k, _, total in by_groups(body)] == expected


@pytest.mark.parametrize("category", ["error", "default", "security"])
def test_default_and_security_count_as_error(
    client: Client, counts: None, auth: dict[str, str], base: int, category: str
) -> None:
    body = get(
        client,
        auth,
        category=[category, "transaction"],
        groupBy="category",
        field="sum(times_seen)",
        start=base,
        end=base + HOUR,
    ).json()
    assert [(g["by"], g["totals"]) for g in body["groups"]] == [
        ({"category": "error"}, {"sum(times_seen)": 133 + 10 + 7})
    ]


def test_project_filter(
    client: Client, projects: list[Project], counts: None, auth: dict[str, str], base: int
) -> None:
    a, b = projects
    params = {
        "field": "sum(quantity)",
        "groupBy": "project",
        "category": "error",
        "start": base,
        "end": base + HOUR,
    }
    only_b = get(client, auth, **params, project=b.pk).json()
    assert [g["by"] for g in only_b["groups"]] == [{"project": b.pk}]
    for every in ({}, {"project": "-1"}, {"project": ["-1", str(a.pk)]}):
        body = get(client, auth, **params, **every).json()
        assert [g["by"]["project"] for g in body["groups"]] == [a.pk, b.pk]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"field": None}, 'At least one "field" is required.'),
        ({"field": ""}, 'At least one "field" is required.'),
        ({"field": "count()"}, 'Invalid field: "count()"'),
        ({"field": ["sum(quantity)", "sum(bytes)"]}, 'Invalid field: "sum(bytes)"'),
        ({"groupBy": "team"}, 'Invalid groupBy: "team"'),
        ({"category": "errors"}, 'Invalid category: "errors"'),
        ({"category": None, "groupBy": "outcome"}, "Query must have category as groupby or filter"),
        ({"outcome": "dropped"}, 'Invalid outcome: "dropped"'),
        ({"project": "abc"}, "Invalid project parameter. Values must be numbers."),
        ({"project": ["1", "1.5"]}, "Invalid project parameter. Values must be numbers."),
        ({"statsPeriod": "1y"}, "Invalid statsPeriod: '1y'"),
        ({"statsPeriod": "0d"}, "Invalid statsPeriod: '0d'"),
        ({"statsPeriod": "99999999999w"}, "Invalid statsPeriod: '99999999999w'"),
        ({"start": "2024-01-01T00:00:00"}, "start and end are both required"),
        ({"end": "2024-01-01T00:00:00"}, "start and end are both required"),
        ({"start": "2024-01-02", "end": "2024-01-01"}, "start must be before end"),
        ({"start": "1704067200", "end": "1704067200"}, "start must be before end"),
        ({"start": "yesterday", "end": "2024-01-01"}, "Invalid start: 'yesterday'"),
        ({"start": "2024-01-01", "end": "nan"}, "Invalid end: 'nan'"),
        ({"interval": "1"}, "Invalid interval: '1'"),
        ({"interval": "10s"}, "Invalid interval: '10s'"),
        ({"interval": "0h"}, "Invalid interval: '0h'"),
        ({"interval": "hour"}, "Invalid interval: 'hour'"),
        ({"interval": "2d"}, "The interval has to be at most one day."),
        ({"interval": "1w"}, "The interval has to be at most one day."),
        ({"interval": "7h"}, "The interval has to divide one day without a remainder."),
        (
            {"statsPeriod": None},
            "Your interval and date range would create too many results. "
            "Use a larger interval, or a smaller date range.",
        ),
        ({"statsPeriod": "42d", "interval": "1h"}, "too many results"),
        (
            {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:00:00Z", "interval": "1d"},
            "too many results",
        ),
    ],
)
def test_every_400_message(
    client: Client, org: Organization, auth: dict[str, str], params: dict[str, Any], detail: str
) -> None:
    query = {"field": "sum(quantity)", "category": "error", "statsPeriod": "1d"}
    if "start" in params or "end" in params:
        del query["statsPeriod"]
    query.update(params)
    query = {k: v for k, v in query.items() if v is not None}
    response = client.get(url(org), query, **auth)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail"}
    assert detail in body["detail"]


def test_out_of_range_dates_are_400_not_500(
    client: Client, org: Organization, auth: dict[str, str]
) -> None:
    for start, end in [
        ("0001-01-01T00:30:00", "0001-01-01T02:00:00"),
        ("9999-12-31T22:30:00", "9999-12-31T23:59:59"),
    ]:
        response = get(client, auth, field="sum(quantity)", category="error", start=start, end=end)
        assert response.status_code in (200, 400), response.content
        if response.status_code == 400:
            assert "years 1 to 9999" in response.json()["detail"]


def test_access_401_403_404(
    client: Client, org: Organization, projects: list[Project], auth: dict[str, str]
) -> None:
    params = {"field": "sum(quantity)", "category": "error", "statsPeriod": "1d"}
    assert client.get(url(org), params).status_code == 401
    assert client.get(url(org), params, HTTP_AUTHORIZATION="Bearer junk").status_code == 401
    response = client.get(url("nope"), params, **auth)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    outsider = UserFactory()
    _, plaintext = ApiToken.objects.issue(outsider, name="t", scopes=["org:read"])
    response = client.get(url(org), params, HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    # 404 comes before a parameter's 400, as on the other endpoints.
    assert client.get(url("nope"), {}, **auth).status_code == 404
    # By id as well as by slug.
    assert client.get(url(str(org.pk)), params, **auth).status_code == 200
    member = OrganizationMemberFactory(organization=org).user
    for scopes in (["org:read"], ["project:read"], ["project:admin"]):
        _, plaintext = ApiToken.objects.issue(member, name="t", scopes=scopes)
        response = client.get(url(org), params, HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        assert response.status_code == 200
    client.force_login(member)
    assert client.get(url(org), params).status_code == 200


def test_a_project_of_another_organization_is_403(
    client: Client, projects: list[Project], counts: None, auth: dict[str, str], base: int
) -> None:
    elsewhere = ProjectFactory()
    tsdb.incr(elsewhere, "received", count=5, timestamp=base)
    params = {"field": "sum(quantity)", "category": "error", "start": base, "end": base + HOUR}
    for ids in ([elsewhere.pk], [projects[0].pk, elsewhere.pk], [projects[0].pk, 123456789012]):
        response = get(client, auth, **params, project=ids)
        assert (response.status_code, response.json()) == (403, FORBIDDEN)
    # A parameter's 400 comes first.
    response = get(client, auth, **{**params, "field": "x"}, project=[elsewhere.pk])
    assert response.status_code == 400


def test_group_by_project_is_bounded_by_max_total_points(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    projects: list[Project],
    auth: dict[str, str],
    base: int,
) -> None:
    settings.PROJECT_STATS = {**getattr(settings, "PROJECT_STATS", {}), "MAX_TOTAL_POINTS": 40}
    params = {
        "field": "sum(quantity)",
        "category": "error",
        "groupBy": "project",
        "start": base - 18 * HOUR,
        "end": base + 6 * HOUR,
    }  # 24 intervals
    response = get(client, auth, **params)
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "groupBy=project would return 2 series of 24 intervals, 48 points in all; the limit "
        "is 40 (MAX_TOTAL_POINTS). Select fewer projects with project, narrow the range or "
        "choose a larger interval."
    )
    # Before the project check too: an outsider's id counts as a selected project.
    elsewhere = ProjectFactory()
    response = get(client, auth, **params, project=[projects[0].pk, elsewhere.pk])
    assert response.status_code == 400
    assert get(client, auth, **params, project=projects[0].pk).status_code == 200
    # Without groupBy=project the answer has one series per group; the write
    # buffer still reads every project's series, so it is bounded the same way.
    response = get(client, auth, **{**params, "groupBy": "outcome"})
    assert response.status_code == (400 if tsdb.buffer_enabled() else 200)


@pytest.mark.parametrize(("interval", "seconds"), [("5m", 300), ("1h", HOUR), ("1d", 86400)])
def test_start_is_floored_and_end_rounded_up_to_the_interval(
    client: Client, counts: None, auth: dict[str, str], interval: str, seconds: int
) -> None:
    # A range inside the last hour, so that 5m is served by the 10 s rollup.
    now = int(time.time())
    start, end = now - 1700, now - 100
    body = get(
        client,
        auth,
        field="sum(quantity)",
        category="error",
        interval=interval,
        start=start,
        end=end,
    ).json()
    first, last = start // seconds * seconds, -(-end // seconds) * seconds
    assert body["start"] == iso(first)
    assert body["end"] == iso(last)
    assert body["intervals"] == [iso(t) for t in range(first, last, seconds)]
    assert len(body["groups"][0]["series"]["sum(quantity)"]) == len(body["intervals"])


def test_five_minute_intervals_count_the_recent_events(
    client: Client, projects: list[Project], auth: dict[str, str]
) -> None:
    now = int(time.time())
    tsdb.incr(projects[0], "received", count=4, timestamp=now - 600)
    tsdb.incr(projects[0], "received", count=3, timestamp=now - 1)
    body = get(
        client, auth, field="sum(quantity)", category="error", interval="5m", statsPeriod="30m"
    ).json()
    series = body["groups"][0]["series"]["sum(quantity)"]
    assert sum(series) == 7
    assert max(series) >= 4  # the two are in different intervals


def test_stats_period_and_both_start_end_forms(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    common = {"field": "sum(quantity)", "category": "error", "interval": "1h"}
    start, end = datetime.fromtimestamp(base, UTC), datetime.fromtimestamp(base + 2 * HOUR, UTC)
    forms = [
        (base, base + 2 * HOUR),
        (f"{base}.0", f"{base + 2 * HOUR}.5"),  # epoch seconds with a fraction: rounded up
        (start.strftime("%Y-%m-%dT%H:%M:%S"), end.strftime("%Y-%m-%dT%H:%M:%S")),  # naive: UTC
        (start.isoformat().replace("+00:00", "Z"), end.isoformat().replace("+00:00", "Z")),
        (
            start.astimezone(timezone_plus_2()).isoformat(),
            end.astimezone(timezone_plus_2()).isoformat(),
        ),
    ]
    answers = []
    for first, last in forms:
        response = get(client, auth, **common, start=first, end=last)
        assert response.status_code == 200, (first, last, response.content)
        answers.append(response.json())
    assert answers[0]["intervals"] == [iso(base), iso(base + HOUR)]
    assert answers[1]["intervals"] == [iso(base), iso(base + HOUR), iso(base + 2 * HOUR)]
    assert answers[0] == answers[2] == answers[3] == answers[4]
    assert answers[0]["groups"][0]["series"]["sum(quantity)"] == [150, 7]
    # statsPeriod wins over start and end; it ends now.
    period = get(client, auth, **common, statsPeriod="7h", start="x", end="y").json()
    assert len(period["intervals"]) in (7, 8)
    assert sum(period["groups"][0]["series"]["sum(quantity)"]) == 150 + 7
    for text in ("25200", "25200s", "420m", "7h"):
        again = get(client, auth, **common, statsPeriod=text).json()
        assert again["start"] in (period["start"], iso(int(time.time()) // HOUR * HOUR - 7 * HOUR))


def timezone_plus_2() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_default_range_is_ninety_days(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    body = get(client, auth, field="sum(quantity)", category="error", interval="1d").json()
    today = int(time.time()) // 86400 * 86400
    assert body["intervals"][0] in (iso(today - 90 * 86400), iso(today - 89 * 86400))
    assert len(body["intervals"]) in (90, 91)
    # Both hours in one day: a's filters (8) exceed its blacklisted (7), so 155.
    same_day = base // 86400 == (base + HOUR) // 86400
    assert body["groups"][0]["totals"]["sum(quantity)"] == (155 if same_day else 157)
    # The default 1h interval over 90 days is more than 1000 intervals.
    response = get(client, auth, field="sum(quantity)", category="error")
    assert response.status_code == 400


def test_a_week_of_hours_stays_hourly(client: Client, counts: None, auth: dict[str, str]) -> None:
    body = get(
        client, auth, field="sum(quantity)", category="error", statsPeriod="7d", interval="1h"
    ).json()
    assert len(body["intervals"]) in (168, 169)
    assert body["groups"][0]["totals"]["sum(quantity)"] == 157


def test_falls_back_to_the_finest_interval_the_rollups_serve(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    # 5-minute buckets three days back: only the 10 s rollup divides 5m, and it
    # keeps an hour. The hourly rollup serves the range: the answer is hourly.
    start = base - 3 * 86400
    body = get(
        client,
        auth,
        field="sum(quantity)",
        category="error",
        interval="5m",
        start=start,
        end=base + 2 * HOUR,
    ).json()
    assert body["intervals"][:2] == [iso(start), iso(start + HOUR)]
    assert body["intervals"][-1] == iso(base + HOUR)
    assert body["groups"][0]["series"]["sum(quantity)"][-2:] == [150, 7]
    # The 1,000-interval check is on the interval asked for.
    too_many = get(
        client,
        auth,
        field="sum(quantity)",
        category="error",
        interval="5m",
        start=base - 4 * 86400,
        end=base,
    )
    assert too_many.status_code == 400
    # Hours older than the hourly rollup keeps: daily buckets.
    old = base - 30 * 86400
    body = get(
        client,
        auth,
        field="sum(quantity)",
        category="error",
        interval="1h",
        start=old,
        end=old + 20 * HOUR,
    ).json()
    assert body["start"] == iso(old // 86400 * 86400)
    assert len(body["intervals"]) in (1, 2)


def test_one_statement_query_count(
    client: Client, counts: None, auth: dict[str, str], base: int, django_assert_num_queries: Any
) -> None:
    if not tsdb.reads_in_one_statement():
        pytest.skip("the buffered path reads through tsdb")
    params = {**GRAFANA, "start": base, "end": base + 3 * HOUR}
    get(client, auth, **params)  # last_used
    for extra in ({}, {"groupBy": ["project", "outcome"]}, {"project": "-1"}):
        with django_assert_num_queries(1):
            assert get(client, auth, **{**params, **extra}).status_code == 200
    ProjectFactory.create_batch(5, organization=Organization.objects.get(slug="acme"))
    with django_assert_num_queries(1):
        assert get(client, auth, **params).status_code == 200
    with django_assert_num_queries(1):
        assert get(client, auth, **params, project=999999999).status_code == 403


def test_buffered_counts_are_included(
    buffer: Any, client: Client, projects: list[Project], auth: dict[str, str], base: int
) -> None:
    a, _ = projects
    tsdb.incr(a, "received", count=20, timestamp=base)
    tsdb.incr(a, "rejected", count=2, timestamp=base)
    tsdb.incr(a, "blacklisted", count=3, timestamp=base)
    tsdb.incr(a, "cors", count=3, timestamp=base)
    expected = [
        (("accepted", "none"), [15], 15),
        (("filtered", "cors"), [3], 3),
        (("rate_limited", "none"), [2], 2),
    ]
    params = {**GRAFANA, "start": base, "end": base + HOUR}
    assert by_groups(get(client, auth, **params).json()) == expected
    tsdb.flush()
    tsdb.incr(a, "received", count=1, timestamp=base)  # buffered again, on top of the flushed
    expected[0] = (("accepted", "none"), [16], 16)
    assert by_groups(get(client, auth, **params).json()) == expected


BUFFERED_PARAMS = {"field": "sum(quantity)", "category": "error", "groupBy": "outcome"}


@pytest.fixture
def many(settings, redis_server: Any, org: Organization, base: int) -> list[int]:  # type: ignore[no-untyped-def]
    """2,000 projects (one insert) with stored and buffered counts, the buffer
    on a Redis of the test's own (its slow log may record every command)."""
    settings.PROJECT_STATS = {"BUFFER": buffer_settings("single", redis_server.url)}
    Project.objects.bulk_create(
        Project(organization=org, slug=f"p{i}", name=f"P{i}") for i in range(2000)
    )
    ids = list(Project.objects.filter(organization=org).values_list("pk", flat=True))
    tsdb.incr_many([(pk, "received", base + 60, 2) for pk in ids])
    tsdb.flush()  # stored, then more buffered on top
    tsdb.incr_many([(pk, s, base + 60, 1) for pk in ids for s in ("received", "rejected")])
    return ids


@pytest.mark.django_db(transaction=True)
def test_a_buffered_read_of_every_project_runs_in_bounded_scripts(
    redis_server: Any, client: Client, many: list[int], auth: dict[str, str], base: int
) -> None:
    # 24 intervals of 1 h without groupBy=project: every project's series is read.
    day = {"start": base - 18 * HOUR, "end": base + 6 * HOUR, "interval": "1h"}
    assert get(client, auth, **BUFFERED_PARAMS, **day, project=many[0]).status_code == 200
    redis = redis_server.client()  # the scripts are loaded: no NOSCRIPT in the log
    log_every_command(redis)
    response = get(client, auth, **BUFFERED_PARAMS, **day)
    assert response.status_code == 200, response.content
    assert by_groups(response.json()) == [
        (("accepted",), [0] * 18 + [4000] + [0] * 5, 4000),
        (("rate_limited",), [0] * 18 + [2000] + [0] * 5, 2000),
    ]
    # In slices: no script asks a hash for more than a few thousand fields
    # (projects x 14 stats x 24 buckets), i.e. a few HMGETs of 500.
    scripts = logged_scripts(redis, buffer_module.scripts.SHA[buffer_module.scripts.READ])
    per_script = [len(args) - 6 for args in scripts]  # the project ids
    assert sum(per_script) == 2000
    assert max(per_script) * len(usage.READ_STATS) * 24 <= 5000
    assert redis.info("commandstats")["cmdstat_hmget"]["calls"] <= 10 * len(scripts)
    redis.close()


@pytest.mark.django_db(transaction=True)
def test_a_buffered_read_of_every_project_is_bounded_by_max_total_points(
    client: Client, many: list[int], org: Organization, auth: dict[str, str], base: int
) -> None:
    # 2,000 series of 100 buckets is more than MAX_TOTAL_POINTS, whatever the grouping.
    wide = {"start": base - 94 * HOUR, "end": base + 6 * HOUR, "interval": "1h"}
    for group_by in ("outcome", []):
        response = get(client, auth, **{**BUFFERED_PARAMS, "groupBy": group_by}, **wide)
        assert (response.status_code, response.json()) == (
            400,
            {
                "detail": "With the write buffer on, 2000 series of 100 points would have "
                "200000 points; the limit is 100000 (MAX_TOTAL_POINTS). Select fewer "
                "projects with project, narrow the range or choose a larger interval."
            },
        )
    response = get(client, auth, **BUFFERED_PARAMS, **wide, project=many[:900])
    assert response.status_code == 200
    assert by_groups(response.json())[0] == (("accepted",), [0] * 94 + [1800] + [0] * 5, 1800)
    # The organization stats endpoint refuses its summed series as before.
    legacy = reverse("project_stats:organization-stats", args=[org.slug])
    params = {"group": "organization", "resolution": "1h", "until": base + 5 * HOUR}
    response = client.get(legacy, {**params, "since": base - 94 * HOUR}, **auth)
    assert response.status_code == 400
    assert "(MAX_TOTAL_POINTS)" in response.json()["detail"]


def test_schema_lists_the_endpoint(client: Client) -> None:
    schema = client.get("/api/0/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/0/organizations/{organization_id_or_slug}/stats_v2/"]["get"]
    assert operation["operationId"] == "listOrganizationStatsV2"
    assert {p["name"] for p in operation["parameters"]} == {
        "organization_id_or_slug",
        "field",
        "groupBy",
        "category",
        "outcome",
        "reason",
        "project",
        "statsPeriod",
        "start",
        "end",
        "interval",
    }
    assert {"200", "400", "401", "403", "404"} <= set(operation["responses"])


SENTRY_SCHEMA = Path(__file__).resolve().parent / "spec" / "sentry-openapi-stats-v2.json"


def test_our_schema_covers_sentrys(client: Client) -> None:
    sentry = json.loads(SENTRY_SCHEMA.read_text())
    [(path, item)] = sentry["paths"].items()
    theirs = item["get"]
    ours = client.get("/api/0/schema/", {"format": "json"}).json()["paths"][path]["get"]
    assert ours["operationId"] == theirs["operationId"] == "listOrganizationStatsV2"
    our_params = {p["name"]: p for p in ours["parameters"]}
    for param in theirs["parameters"]:
        mine = our_params[param["name"]]
        assert mine["in"] == param["in"]
        their_enum = set(param["schema"].get("items", param["schema"]).get("enum", []))
        our_enum = set(mine["schema"].get("items", mine["schema"]).get("enum", []) or [])
        assert their_enum <= our_enum or not their_enum, param["name"]
    assert set(theirs["responses"]) <= set(ours["responses"])


def test_sentrys_schema_accepts_our_answers(
    client: Client, counts: None, auth: dict[str, str], base: int
) -> None:
    import jsonschema

    sentry = json.loads(SENTRY_SCHEMA.read_text())
    [item] = sentry["paths"].values()
    schema = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    for params in (
        GRAFANA,
        {"field": "sum(quantity)", "category": "error"},
        {"field": "sum(times_seen)", "groupBy": ["project", "category"]},
    ):
        response = get(client, auth, **params, start=base, end=base + 3 * HOUR)
        assert response.status_code == 200
        jsonschema.validate(response.json(), schema)
