from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from project_stats import tsdb
from project_stats.models import ApiToken, Organization, Project
from project_stats.tsdb.rollups import bucket_start

from .factories import OrganizationFactory, OrganizationMemberFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

NOT_FOUND = {"detail": "The requested resource does not exist"}


def projects_url(org: Organization | str) -> str:
    slug = org if isinstance(org, str) else org.slug
    return reverse("project_stats:organization-projects", kwargs={"organization_id_or_slug": slug})


def stats_url(org: Organization | str) -> str:
    slug = org if isinstance(org, str) else org.slug
    return reverse("project_stats:organization-stats", kwargs={"organization_id_or_slug": slug})


@pytest.fixture
def org() -> Organization:
    return OrganizationFactory(slug="acme")


@pytest.fixture
def projects(org: Organization) -> list[Project]:
    return [
        ProjectFactory(organization=org, slug=slug, name=name)
        for slug, name in [("api", "Backend API"), ("web", "Web Frontend"), ("jobs", "Workers")]
    ]


@pytest.fixture
def auth(org: Organization) -> dict[str, str]:
    user = OrganizationMemberFactory(organization=org).user
    _, plaintext = ApiToken.objects.issue(user, name="t", scopes=["org:read"])
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def get(client: Client, path: str, auth: dict[str, str], **params: Any) -> Any:
    return client.get(path, params, **auth)


# -- project listing ---------------------------------------------------------


def test_lists_the_organizations_projects(
    client: Client, org: Organization, projects: list[Project], auth: dict[str, str]
) -> None:
    ProjectFactory(slug="elsewhere")  # another organization's
    response = get(client, projects_url(org), auth)
    assert response.status_code == 200
    body = response.json()
    assert [p["slug"] for p in body] == ["api", "jobs", "web"]
    first = body[0]
    assert first == {
        "id": str(projects[0].pk),
        "slug": "api",
        "name": "Backend API",
        "dateCreated": first["dateCreated"],
        "organization": {"slug": "acme", "name": org.name},
    }
    assert first["dateCreated"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "slugs"),
    [
        ({"query": "api"}, ["api"]),
        ({"query": "FRONT"}, ["web"]),  # name, case-insensitive
        ({"query": "o"}, ["jobs", "web"]),  # "jobs" slug, "Web Frontend", "Workers"
        ({"slug": ["api", "web"]}, ["api", "web"]),
        ({"slug": "nope"}, []),
        ({"slug": ""}, ["api", "jobs", "web"]),
        ({"query": ""}, ["api", "jobs", "web"]),
    ],
)
def test_filters(
    client: Client,
    org: Organization,
    projects: list[Project],
    auth: dict[str, str],
    params: dict[str, Any],
    slugs: list[str],
) -> None:
    response = get(client, projects_url(org), auth, **params)
    assert response.status_code == 200
    assert [p["slug"] for p in response.json()] == slugs


def test_pagination_with_sentry_link_header(
    client: Client, org: Organization, auth: dict[str, str]
) -> None:
    for i in range(5):
        ProjectFactory(organization=org, slug=f"p{i}")
    first = get(client, projects_url(org), auth, per_page=2)
    assert [p["slug"] for p in first.json()] == ["p0", "p1"]
    link = first["Link"]
    assert 'rel="previous"; results="false"; cursor="0:0:1"' in link
    assert 'rel="next"; results="true"; cursor="0:2:0"' in link
    second = get(client, projects_url(org), auth, per_page=2, cursor="0:2:0")
    assert [p["slug"] for p in second.json()] == ["p2", "p3"]
    assert 'rel="previous"; results="true"; cursor="0:0:1"' in second["Link"]
    last = get(client, projects_url(org), auth, per_page=2, cursor="0:4:0")
    assert [p["slug"] for p in last.json()] == ["p4"]
    assert 'rel="next"; results="false"' in last["Link"]
    next_url = last["Link"].split(", ")[1].split(">")[0][1:]
    assert "cursor=0%3A6%3A0" in next_url or "cursor=0:6:0" in next_url


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"cursor": "bogus"}, "Invalid cursor parameter."),
        ({"cursor": "0:-1:0"}, "Invalid cursor parameter."),
        ({"per_page": "0"}, "per_page must be an integer from 1 to 100"),
        ({"per_page": "101"}, "per_page"),
        ({"per_page": "x"}, "per_page"),
        ({"per_page": "\u00b3"}, "per_page"),  # a digit to isdigit(), not to int()
        ({"per_page": "\u0661"}, "per_page"),  # a decimal digit, but not ASCII
        ({"slug": "x" * 51}, "Invalid slug"),
        ({"query": "x" * 201}, "Invalid query"),
    ],
)
def test_bad_listing_parameters_are_400(
    client: Client, org: Organization, auth: dict[str, str], params: dict[str, str], fragment: str
) -> None:
    response = get(client, projects_url(org), auth, **params)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


def test_listing_query_count_does_not_grow(
    client: Client, org: Organization, auth: dict[str, str], django_assert_max_num_queries: Any
) -> None:
    get(client, projects_url(org), auth)  # last_used
    ProjectFactory.create_batch(30, organization=org)
    with django_assert_max_num_queries(2):  # token with organization, page
        assert len(get(client, projects_url(org), auth).json()) == 30


# -- organization stats ------------------------------------------------------


@pytest.fixture
def counts(projects: list[Project]) -> None:
    now = time.time()
    for i, project in enumerate(projects):
        tsdb.incr(project, "received", timestamp=now, count=10**i)
        tsdb.incr(project, "received", timestamp=now - 3600, count=1)
    tsdb.incr(projects[0], "generated", timestamp=now, count=5, environment="production")
    tsdb.incr(ProjectFactory(), "received", timestamp=now, count=1000)  # elsewhere


def test_summed_series_by_default(
    client: Client, org: Organization, counts: None, auth: dict[str, str]
) -> None:
    response = get(client, stats_url(org), auth)
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 24
    assert body[-1] == [bucket_start(time.time(), 3600), 111]
    assert body[-2][1] == 3
    assert get(client, stats_url(org), auth, group="organization").json() == body


def test_grouped_by_project(
    client: Client, org: Organization, projects: list[Project], counts: None, auth: dict[str, str]
) -> None:
    empty = ProjectFactory(organization=org)
    body = get(client, stats_url(org), auth, group="project").json()
    assert set(body) == {str(p.pk) for p in [*projects, empty]}
    assert body[str(projects[1].pk)][-1][1] == 10
    assert sum(c for _, c in body[str(empty.pk)]) == 0
    assert all(len(series) == 24 for series in body.values())


def test_project_id_restricts_and_outsiders_are_ignored(
    client: Client, org: Organization, projects: list[Project], counts: None, auth: dict[str, str]
) -> None:
    outsider = ProjectFactory()
    ids = [projects[0].pk, projects[2].pk, outsider.pk]
    body = get(client, stats_url(org), auth, projectID=ids).json()
    assert body[-1][1] == 101
    grouped = get(client, stats_url(org), auth, projectID=ids, group="project").json()
    assert set(grouped) == {str(projects[0].pk), str(projects[2].pk)}
    only_outsider = get(client, stats_url(org), auth, projectID=outsider.pk).json()
    assert sum(c for _, c in only_outsider) == 0


def test_same_parameters_as_the_project_endpoint(
    client: Client, org: Organization, counts: None, auth: dict[str, str]
) -> None:
    now = time.time()
    body = get(client, stats_url(org), auth, since=now - 600, until=now, resolution="10s").json()
    assert len(body) == 61
    assert body[-1][1] == 111
    env = get(client, stats_url(org), auth, stat="generated", environment="production").json()
    assert sum(c for _, c in env) == 5


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"group": "team"}, 400, "Invalid group: team (use organization or project)"),
        ({"projectID": "abc"}, 400, "Invalid projectID: Enter a whole number."),
        ({"projectID": ["1", "x"]}, 400, "Invalid projectID: Enter a whole number."),
        ({"projectID": "99999999999999999999"}, 400, "Invalid projectID"),
        ({"stat": "nope"}, 400, "Invalid stat: nope"),
        ({"resolution": "1w"}, 400, "Invalid resolution"),
        ({"until": "x"}, 400, "until must be a numeric timestamp."),
        ({"since": "2000000000", "until": "1"}, 400, "start must be before or equal to end"),
        ({"stat": "generated", "environment": "nowhere"}, 404, NOT_FOUND["detail"]),
        ({"since": "0"}, 400, "limit is 10000"),
    ],
)
def test_errors(
    client: Client,
    org: Organization,
    counts: None,
    auth: dict[str, str],
    params: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    response = get(client, stats_url(org), auth, **params)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_group_project_answers_are_bounded_by_max_total_points(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    org: Organization,
    projects: list[Project],
    auth: dict[str, str],
    django_assert_num_queries: Any,
) -> None:
    settings.PROJECT_STATS = {"MAX_TOTAL_POINTS": 60}
    get(client, stats_url(org), auth)  # last_used
    # Refused in the one statement: it counts the projects before reading any counts.
    with django_assert_num_queries(1):
        response = get(client, stats_url(org), auth, group="project")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "group=project would return 3 series of 24 points, 72 points in all; "
        "the limit is 60 (MAX_TOTAL_POINTS). Select fewer projects with projectID, "
        "narrow since/until or choose a coarser resolution."
    }
    two = [projects[0].pk, projects[1].pk]
    assert get(client, stats_url(org), auth, group="project", projectID=two).status_code == 200
    # One summed series is bounded by MAX_POINTS alone.
    assert get(client, stats_url(org), auth).status_code == 200


def test_group_project_is_bounded_by_default(
    client: Client, org: Organization, auth: dict[str, str]
) -> None:
    ProjectFactory.create_batch(11, organization=org)
    until = 1_700_000_000
    params = {"group": "project", "resolution": "1h", "until": until, "since": until - 9_999 * 3600}
    response = get(client, stats_url(org), auth, **params)
    assert response.status_code == 400
    assert (
        "11 series of 10000 points, 110000 points in all; the limit is 100000"
        in (response.json()["detail"])
    )


@pytest.mark.parametrize("group", ["organization", "project"])
def test_stats_query_count_does_not_grow_with_projects(
    client: Client,
    org: Organization,
    auth: dict[str, str],
    group: str,
    django_assert_max_num_queries: Any,
) -> None:
    get(client, stats_url(org), auth)  # last_used
    for batch in (1, 20):
        ProjectFactory.create_batch(batch, organization=org)
        # token, organization, (project ids,) counts: one statement
        with django_assert_max_num_queries(1):
            assert get(client, stats_url(org), auth, group=group).status_code == 200


# -- access ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [projects_url, stats_url])
def test_access_rules(client: Client, org: Organization, path: Any) -> None:
    member = OrganizationMemberFactory(organization=org).user
    outsider = UserFactory()

    def bearer(user: Any, scopes: list[str]) -> dict[str, str]:
        _, plaintext = ApiToken.objects.issue(user, name="t", scopes=scopes)
        return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}

    assert client.get(path(org)).status_code == 401
    assert client.get(path(org), HTTP_AUTHORIZATION="Bearer junk").status_code == 401
    for scopes in (["org:read"], ["project:read"], ["project:write"], ["project:admin"]):
        assert client.get(path(org), **bearer(member, scopes)).status_code == 200
    response = client.get(path("nope"), **bearer(member, ["org:read"]))
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    response = client.get(path(org), **bearer(outsider, ["org:read"]))
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    superuser = UserFactory(is_superuser=True)
    assert client.get(path(org), **bearer(superuser, ["org:read"])).status_code == 200
    client.force_login(member)
    assert client.get(path(org)).status_code == 200


def test_schema_has_both_organization_endpoints(client: Client) -> None:
    schema = client.get("/api/0/schema/", {"format": "json"}).json()
    listing = schema["paths"]["/api/0/organizations/{organization_id_or_slug}/projects/"]["get"]
    stats = schema["paths"]["/api/0/organizations/{organization_id_or_slug}/stats/"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"query", "slug", "cursor", "per_page"}
    assert {p["name"] for p in stats["parameters"]} >= {
        "stat",
        "since",
        "until",
        "resolution",
        "group",
        "projectID",
    }
    assert {"auth_token": ["org:read", "project:admin", "project:read", "project:write"]} in stats[
        "security"
    ]
    for operation in (listing, stats):
        [param] = [p for p in operation["parameters"] if p["in"] == "path"]
        assert param["name"] == "organization_id_or_slug"
        assert param["description"].startswith("The ID or slug of the organization")
