"""The endpoints behave as documented whatever the site's REST_FRAMEWORK defaults.

The site (``settings_drf_defaults``) authenticates with Basic auth, lets only
staff in, renders JSON only, envelopes pages of one item, orders by
``?ordering=``, throttles each user to one request a day, answers OPTIONS
with 405, reshapes errors, and formats datetimes as ``dd/mm/YYYY``.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from project_stats import tsdb
from project_stats.models import ApiToken, Project

from ..conftest import bearer
from ..factories import ApiTokenFactory, ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(member_token: ApiToken) -> ApiToken:
    """A plain member (not staff) with the scopes of all three endpoints."""
    assert not member_token.user.is_staff
    return ApiTokenFactory(user=member_token.user, scopes=["project:read", "org:read"])  # type: ignore[no-any-return]


def paths(project: Project) -> list[str]:
    org = project.organization.slug
    return [
        f"/api/0/projects/{org}/{project.slug}/stats/",
        f"/api/0/organizations/{org}/projects/",
        f"/api/0/organizations/{org}/stats/",
    ]


def test_a_members_token_reads_every_endpoint_repeatedly(
    client: Client, project: Project, token: ApiToken
) -> None:
    tsdb.incr(project, "received", count=3)
    for path in paths(project):
        for _ in range(3):  # the site's throttle allows one a day
            response = client.get(path, **bearer(token))
            assert response.status_code == 200, response.content
    assert sum(count for _, count in client.get(paths(project)[0], **bearer(token)).json()) == 3
    v2 = {"field": "sum(quantity)", "category": "error", "statsPeriod": "1h"}
    path = f"/api/0/organizations/{project.organization.slug}/stats_v2/"
    for _ in range(3):
        response = client.get(path, v2, **bearer(token))
        assert response.status_code == 200, response.content
    assert response.json()["groups"][0]["totals"] == {"sum(quantity)": 3}


@pytest.mark.parametrize("credentials", ["none", "basic"])
def test_without_a_token_401_with_the_bearer_challenge(
    client: Client, project: Project, token: ApiToken, credentials: str
) -> None:
    extra = {}
    if credentials == "basic":
        # Valid for the site's Basic authentication; the API does not take it.
        token.user.set_password("password")
        token.user.save()
        pair = base64.b64encode(f"{token.user.get_username()}:password".encode()).decode()
        extra["HTTP_AUTHORIZATION"] = f"Basic {pair}"
    for path in paths(project):
        response = client.get(path, **extra)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
        assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_errors_keep_their_documented_shape(
    client: Client, project: Project, token: ApiToken
) -> None:
    stats = paths(project)[0]
    response = client.get(stats, {"since": 200, "until": 100}, **bearer(token))
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "start must be before or equal to end"},
    )
    response = client.get(stats, {"stat": "nope"}, **bearer(token))
    assert (response.status_code, response.json()) == (400, {"detail": "Invalid stat: nope"})
    response = client.get(stats.replace(project.slug, "unknown"), **bearer(token))
    assert response.status_code == 404
    assert response.json() == {"detail": "The requested resource does not exist"}


def test_options_answers_without_credentials(client: Client, project: Project) -> None:
    for path in paths(project):
        assert client.options(path).status_code == 200


def test_the_browsable_api_for_a_signed_in_member(
    client: Client, project: Project, token: ApiToken
) -> None:
    client.force_login(token.user)
    response = client.get(paths(project)[0], HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_projects_are_pages_of_sentry_shape(
    client: Client, project: Project, token: ApiToken
) -> None:
    for slug in ("b-second", "c-third"):
        ProjectFactory(organization=project.organization, slug=slug)
    url = paths(project)[1]
    response = client.get(url, {"ordering": "-slug"}, **bearer(token))
    rows = response.json()
    # A bare list, 100 per page by default, ordered by slug.
    assert [row["slug"] for row in rows] == sorted(row["slug"] for row in rows)
    assert len(rows) == 3
    assert 'rel="next"; results="false"' in response["Link"]
    paged = client.get(url, {"per_page": 1}, **bearer(token))
    assert len(paged.json()) == 1 and 'rel="next"; results="true"' in paged["Link"]
    created = rows[0]["dateCreated"]
    assert created.endswith("Z") and datetime.fromisoformat(created)


def test_the_schema_still_validates(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", out
    )
    schema = json.loads(out.read_text())
    operation = schema["paths"]["/api/0/organizations/{organization_id_or_slug}/projects/"]["get"]
    # A bare list with Sentry's paging parameters, not the site's envelope.
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["type"] == "array"
    assert {"cursor", "per_page"} <= {p["name"] for p in operation["parameters"]}
    assert not {"page", "ordering"} & {p["name"] for p in operation["parameters"]}
