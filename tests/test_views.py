from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from django.urls import reverse

from project_stats import tsdb
from project_stats.models import ApiToken, OrganizationMember, Project
from project_stats.tsdb.rollups import bucket_start

from .factories import (
    OrganizationFactory,
    OrganizationMemberFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# The extract of Sentry's OpenAPI schema that the contract tests hold us to.
SENTRY_SCHEMA = Path(__file__).resolve().parent / "spec" / "sentry-openapi-project-stats.json"
NOT_FOUND = {"detail": "The requested resource does not exist"}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}

Get = Callable[..., Any]


def url(project: Project | None = None, org: str | None = None, slug: str | None = None) -> str:
    return reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": org or project.organization.slug,  # type: ignore[union-attr]
            "project_id_or_slug": slug or project.slug,  # type: ignore[union-attr]
        },
    )


def bearer(user: AbstractBaseUser, scopes: tuple[str, ...] = ("project:read",)) -> str:
    _, plaintext = ApiToken.objects.issue(user, name="test", scopes=list(scopes))
    return f"Bearer {plaintext}"


@pytest.fixture
def member(project: Project) -> OrganizationMember:
    return OrganizationMemberFactory(organization=project.organization)


@pytest.fixture
def get(client: Client, member: OrganizationMember) -> Get:
    auth = bearer(member.user)

    def get(path: str, params: dict[str, Any] | None = None, **extra: Any) -> Any:
        extra.setdefault("HTTP_AUTHORIZATION", auth)
        return client.get(path, params or {}, **extra)

    return get


def test_default_request_is_24_hourly_points_newest_last(get: Get, project: Project) -> None:
    now = time.time()
    tsdb.incr(project, "received", timestamp=now, count=2)
    tsdb.incr(project, "received", timestamp=now - 23 * 3600, count=5)
    response = get(url(project))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert len(body) == 24
    hour = bucket_start(now, 3600)
    assert [t for t, _ in body] == [hour - 3600 * i for i in reversed(range(24))]
    assert body[-1] == [hour, 2]
    assert body[0] == [hour - 23 * 3600, 5]
    assert all(isinstance(t, int) for t, _ in body)


def test_float_timestamps_as_the_spec_example(get: Get, project: Project, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"TIMESTAMP_FORMAT": "float"}
    until = 1536609600 + 1800
    response = get(url(project), {"until": until, "since": 1536526800, "resolution": "1h"})
    assert response.status_code == 200
    assert response.content.startswith(b"[[1536526800.0,0],[1536530400.0,0]")
    assert len(response.json()) == 24


@pytest.mark.parametrize("stat", ["received", "rejected", "blacklisted", "generated", "cors"])
def test_each_stat_is_its_own_series(get: Get, project: Project, stat: str) -> None:
    now = time.time()
    for i, name in enumerate(["received", "rejected", "blacklisted", "generated", "cors"]):
        tsdb.incr(project, name, timestamp=now, count=10 + i)
    expected = 10 + ["received", "rejected", "blacklisted", "generated", "cors"].index(stat)
    body = get(url(project), {"stat": stat}).json()
    assert sum(c for _, c in body) == expected


def test_another_projects_counts_never_leak_in(
    get: Get, project: Project, other_project: Project
) -> None:
    tsdb.incr(other_project, "received", count=100)
    tsdb.incr(project, "received", count=1)
    assert sum(c for _, c in get(url(project)).json()) == 1
    assert sum(c for _, c in get(url(other_project)).json()) == 100


@pytest.mark.parametrize(
    ("span", "resolution", "points", "rollup"),
    [
        (3600, None, 361, 10),
        (3601, None, 2, 3600),
        (7 * 86400 + 1, None, 8, 86400),
        (86399, None, 24, 3600),
        (600, "1h", 1, 3600),
        (600, "60m", 1, 3600),
        (600, "10s", 61, 10),
        (86400 * 89, "1d", 90, 86400),
    ],
)
def test_bucket_series_vectors(
    get: Get, project: Project, span: int, resolution: str | None, points: int, rollup: int
) -> None:
    until = time.time()
    params: dict[str, Any] = {"since": until - span, "until": until}
    if resolution:
        params["resolution"] = resolution
    body = get(url(project), params).json()
    assert len(body) == points
    assert body[-1][0] == bucket_start(until, rollup)
    assert all(b[0] - a[0] == rollup for a, b in zip(body, body[1:], strict=False))


def test_environment_counts(get: Get, project: Project, other_project: Project) -> None:
    tsdb.incr(project, "generated", environment="production", count=3)
    tsdb.incr(project, "generated", environment="staging", count=4)
    # Recorded in the organization (another project) counts as known: zeros here.
    tsdb.incr(other_project, "generated", environment="canary", count=9)

    def total(**params: str) -> int:
        response = get(url(project), params)
        assert response.status_code == 200, response.content
        return sum(c for _, c in response.json())

    assert total(stat="generated") == 7
    assert total(stat="generated", environment="production") == 3
    assert total(stat="generated", environment="staging") == 4
    assert total(stat="generated", environment="canary") == 0
    # Other stats ignore the parameter, as Sentry does.
    assert total(stat="received", environment="nowhere") == 0
    response = get(url(project), {"stat": "generated", "environment": "nowhere"})
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"stat": "nope"}, "Invalid stat: nope"),
        ({"resolution": "1w"}, "Invalid resolution"),
        ({"resolution": "1H"}, "Invalid resolution"),
        ({"resolution": "0s"}, "Invalid resolution"),
        ({"resolution": "-1h"}, "Invalid resolution"),
        ({"until": "tomorrow"}, "until must be a numeric timestamp."),
        ({"since": "yesterday"}, "since must be a numeric timestamp"),
        ({"since": "2000000000", "until": "1000000000"}, "start must be before or equal to end"),
    ],
)
def test_bad_input_is_400_with_sentrys_message(
    get: Get, project: Project, params: dict[str, str], message: str
) -> None:
    response = get(url(project), params)
    assert response.status_code == 400
    assert response.json() == {"detail": message}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"since": "NaN"}, "since must be a finite number"),
        ({"until": "inf"}, "until must be a finite number"),
        ({"until": "1e20"}, "until is out of range"),
        ({"since": str(int(time.time() * 1000))}, "since is out of range"),
        ({"since": str(time.time() - 90 * 86400), "resolution": "10s"}, "limit is 10000"),
        ({"since": "0"}, "limit is 10000"),
    ],
)
def test_bad_numbers_and_huge_series_are_400(
    get: Get, project: Project, params: dict[str, str], fragment: str
) -> None:
    response = get(url(project), params)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


def test_headers_as_the_spec_example(get: Get, project: Project) -> None:
    response = get(url(project))
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    assert response["X-Frame-Options"].lower() == "deny"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_head_works(get: Get, project: Project, client: Client, member: OrganizationMember) -> None:
    response = client.head(url(project), HTTP_AUTHORIZATION=bearer(member.user))
    assert response.status_code == 200
    assert response.content == b""


def test_options_needs_no_credentials(client: Client, project: Project) -> None:
    response = client.options(url(project))
    assert response.status_code == 200
    assert response["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_other_methods_are_405_with_or_without_credentials(
    client: Client, project: Project, member: OrganizationMember, method: str
) -> None:
    for extra in ({}, {"HTTP_AUTHORIZATION": bearer(member.user)}):
        response = getattr(client, method)(url(project), **extra)
        assert response.status_code == 405
        assert "detail" in response.json()


def test_access_rules_on_the_real_endpoint(client: Client, project: Project) -> None:
    outsider = UserFactory()
    member = OrganizationMemberFactory(organization=project.organization).user
    cases = [
        ({}, url(project), 401, None),
        ({"HTTP_AUTHORIZATION": "Bearer psk_nope"}, url(project), 401, None),
        ({"HTTP_AUTHORIZATION": bearer(outsider)}, url(project), 404, NOT_FOUND),
        ({"HTTP_AUTHORIZATION": bearer(member)}, url(project, slug="nope"), 404, NOT_FOUND),
        ({"HTTP_AUTHORIZATION": bearer(member)}, url(project, org="nope"), 404, NOT_FOUND),
        ({"HTTP_AUTHORIZATION": bearer(member, ("org:read",))}, url(project), 403, FORBIDDEN),
        ({"HTTP_AUTHORIZATION": bearer(member, ("project:admin",))}, url(project), 200, None),
    ]
    for extra, path, status, body in cases:
        response = client.get(path, **extra)
        assert response.status_code == status, (extra, path, response.content)
        if body is not None:
            assert response.json() == body
        if status == 401:
            assert "detail" in response.json()
            assert response.has_header("WWW-Authenticate")


def test_superuser_and_session(client: Client, project: Project) -> None:
    admin = UserFactory(is_superuser=True, is_staff=True)
    assert client.get(url(project), HTTP_AUTHORIZATION=bearer(admin)).status_code == 200
    client.force_login(admin)
    assert client.get(url(project)).status_code == 200


def test_browsable_api_for_a_logged_in_member(client: Client, project: Project) -> None:
    member = OrganizationMemberFactory(organization=project.organization).user
    client.force_login(member)
    tsdb.incr(project, "received", count=3)
    response = client.get(url(project), HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"Project Stats" in response.content


def test_renamed_project_redirects_keeping_the_query(get: Get, project: Project) -> None:
    old = url(project)
    project.slug = "renamed"
    project.save()
    response = get(old, {"stat": "rejected", "resolution": "1h"})
    assert response.status_code == 302
    assert response["Location"] == url(project) + "?stat=rejected&resolution=1h"
    assert get(response["Location"]).status_code == 200


def test_redirect_reveals_nothing_to_outsiders(client: Client, project: Project) -> None:
    old = url(project)
    project.slug = "renamed"
    project.save()
    response = client.get(old, HTTP_AUTHORIZATION=bearer(UserFactory()))
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert client.get(old).status_code == 401


def test_a_new_project_takes_over_an_old_slug(get: Get, project: Project) -> None:
    old_slug = project.slug
    project.slug = "renamed"
    project.save()
    newcomer = ProjectFactory(organization=project.organization, slug=old_slug)
    tsdb.incr(newcomer, "received", count=5)
    response = get(url(newcomer))
    assert response.status_code == 200
    assert sum(c for _, c in response.json()) == 5


def test_an_old_slug_of_a_moved_project_never_leads_to_another_project(
    get: Get, project: Project
) -> None:
    old_org, old = project.organization, url(project)
    project.slug = "renamed"
    project.save()
    project.organization = OrganizationFactory()
    project.save()
    ProjectFactory(organization=old_org, slug="renamed")  # another project, the same slug
    response = get(old)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_query_count_is_constant(
    get: Get, project: Project, django_assert_max_num_queries: Any
) -> None:
    get(url(project))  # the first use of a token records last_used
    for params in (
        {},
        {"resolution": "10s", "since": time.time() - 3600},
        {"resolution": "1d", "since": time.time() - 89 * 86400},
    ):
        # token, project with membership and counts: one statement
        with django_assert_max_num_queries(1):
            assert get(url(project), params).status_code == 200


def test_query_count_with_environment(
    get: Get, project: Project, django_assert_max_num_queries: Any
) -> None:
    tsdb.incr(project, "generated", environment="production")
    get(url(project))
    with django_assert_max_num_queries(1):  # the environment check is in the statement too
        get(url(project), {"stat": "generated", "environment": "production"})


def test_schema_describes_the_endpoint(client: Client) -> None:
    from openapi_spec_validator import validate

    schema = client.get("/api/0/schema/", {"format": "json"}).json()
    validate(schema)
    operation = schema["paths"][
        "/api/0/projects/{organization_id_or_slug}/{project_id_or_slug}/stats/"
    ]["get"]
    assert operation["operationId"] == "listProjectStats"
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["stat"]["schema"]["default"] == "received"
    assert {"received", "rejected", "blacklisted", "generated"} <= set(
        params["stat"]["schema"]["enum"]
    )
    assert sorted(params["resolution"]["schema"]["enum"]) == ["10s", "1d", "1h"]
    assert params["since"]["schema"]["type"] == "number"
    assert set(operation["responses"]) >= {"200", "400", "401", "403", "404"}
    assert {"auth_token": ["project:admin", "project:read", "project:write"]} in operation[
        "security"
    ]
    scheme = schema["components"]["securitySchemes"]["auth_token"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"


def test_schema_agrees_with_sentrys_contract(client: Client) -> None:
    sentry = json.loads(SENTRY_SCHEMA.read_text())
    theirs = next(iter(sentry["paths"].values()))["get"]
    ours = next(
        op["get"]
        for path, op in client.get("/api/0/schema/", {"format": "json"}).json()["paths"].items()
        if path.endswith("/stats/") and "projects" in path
    )
    assert ours["operationId"] == theirs["operationId"]
    their_query = {p["name"]: p for p in theirs["parameters"] if p["in"] == "query"}
    our_query = {p["name"]: p for p in ours["parameters"] if p["in"] == "query"}
    assert set(their_query) <= set(our_query)
    for name, param in their_query.items():
        assert our_query[name]["schema"]["type"] == param["schema"]["type"]
        assert set(param["schema"].get("enum", [])) <= set(
            our_query[name]["schema"].get("enum", [])
        )
    assert set(theirs["responses"]) <= set(ours["responses"])


def test_schema_names_the_path_parameters_as_sentry_does(client: Client) -> None:
    sentry = json.loads(SENTRY_SCHEMA.read_text())
    [(their_path, their_item)] = sentry["paths"].items()
    ours = client.get("/api/0/schema/", {"format": "json"}).json()["paths"]
    assert their_path in ours
    their_params = [p for p in their_item["get"]["parameters"] if p["in"] == "path"]
    our_params = [p for p in ours[their_path]["get"]["parameters"] if p["in"] == "path"]
    assert [(p["name"], p["schema"]["type"], p["required"]) for p in our_params] == [
        (p["name"], p["schema"]["type"], p["required"]) for p in their_params
    ]
    for param in our_params:
        # Both forms are described, and how one is told from the other.
        assert "ID or slug" in param["description"]
        assert "digits only" in param["description"]


def test_schema_validates_the_responses(get: Get, project: Project, client: Client) -> None:
    import jsonschema

    schema = client.get("/api/0/schema/", {"format": "json"}).json()
    operation = schema["paths"][
        "/api/0/projects/{organization_id_or_slug}/{project_id_or_slug}/stats/"
    ]["get"]

    def check(response: Any) -> None:
        spec = operation["responses"][str(response.status_code)]
        jsonschema.validate(response.json(), spec["content"]["application/json"]["schema"])

    tsdb.incr(project, "received", count=3)
    check(get(url(project)))
    check(get(url(project), {"resolution": "10s", "since": time.time() - 600}))
    check(get(url(project), {"stat": "nope"}))
    check(get(url(project, slug="nope")))
    check(client.get(url(project)))


def test_sentrys_schema_accepts_our_answer(get: Get, project: Project) -> None:
    import jsonschema

    tsdb.incr(project, "received", count=3)
    sentry = json.loads(SENTRY_SCHEMA.read_text())
    theirs = next(iter(sentry["paths"].values()))["get"]["responses"]["200"]
    jsonschema.validate(get(url(project)).json(), theirs["content"]["application/json"]["schema"])


def test_swagger_ui_is_served_without_a_cdn(client: Client) -> None:
    response = client.get("/api/0/schema/swagger/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    # Every script and stylesheet comes from this site (the sidecar's static files);
    # a bare "cdn" search would trip over random CSRF tokens.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "drf_spectacular_sidecar/swagger-ui-dist/" in html


def test_redoc_is_served_without_a_cdn(client: Client) -> None:
    response = client.get("/api/0/schema/redoc/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Redoc.init" in html or "<redoc" in html
    # drf-spectacular's own template links web fonts from the network.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "drf_spectacular_sidecar/redoc/" in html


@pytest.mark.parametrize(
    ("path_slug", "params"),
    [
        ("nul\x00", {}),
        (None, {"stat": "generated", "environment": "prod\x00"}),
        (None, {"stat": "nul\x00"}),
        (None, {"since": "1\x00"}),
        (None, {"resolution": "\x001h"}),
        (None, {"environment": "x" * 10_000, "stat": "generated"}),
        ("\u00e9\U0001f600", {}),
    ],
)
def test_junk_in_path_or_query_is_a_4xx_not_a_500(
    get: Get, project: Project, path_slug: str | None, params: dict[str, str]
) -> None:
    project.slug, old = "renamed", project.slug
    project.save()  # so the redirect lookup runs too
    response = get(url(project, slug=path_slug or old) if path_slug else url(project), params)
    assert response.status_code in (400, 404)
    assert isinstance(response.json()["detail"], str)
