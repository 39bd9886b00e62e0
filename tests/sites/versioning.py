"""Tests shared by the two versioning configurations.

Both sites serve versions ``0`` and ``1`` at ``/api/<version>/``: one with
``URLPathVersioning`` (a ``version`` URL argument), one with
``NamespaceVersioning`` (one namespaced include per version).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from openapi_spec_validator import validate

from project_stats import tsdb
from project_stats.models import ApiToken, Project

from ..conftest import bearer
from ..factories import ApiTokenFactory, ProjectFactory

VERSIONS = pytest.mark.parametrize("version", ["0", "1"])


def stats_path(version: str, project: Project, slug: str | None = None) -> str:
    return f"/api/{version}/projects/{project.organization.slug}/{slug or project.slug}/stats/"


@pytest.fixture
def org_token(member_token: ApiToken) -> ApiToken:
    return ApiTokenFactory(user=member_token.user, scopes=["org:read"])  # type: ignore[no-any-return]


@VERSIONS
@pytest.mark.django_db
def test_project_stats(
    client: Client, project: Project, member_token: ApiToken, version: str
) -> None:
    tsdb.incr(project, "received", count=4)
    response = client.get(stats_path(version, project), **bearer(member_token))
    assert response.status_code == 200, response.content
    points = response.json()
    assert len(points) == 24 and sum(count for _, count in points) == 4


@VERSIONS
@pytest.mark.django_db
def test_organization_endpoints(
    client: Client, project: Project, org_token: ApiToken, version: str
) -> None:
    ProjectFactory(organization=project.organization)
    tsdb.incr(project, "received", count=2)
    base = f"/api/{version}/organizations/{project.organization.slug}"
    response = client.get(f"{base}/projects/", {"per_page": 1}, **bearer(org_token))
    assert response.status_code == 200, response.content
    assert [row["slug"] for row in response.json()] == [project.slug]
    (next_link,) = [link for link in response["Link"].split(", ") if 'rel="next"' in link]
    assert f"http://testserver{base}/projects/?" in next_link
    assert 'results="true"' in next_link
    response = client.get(f"{base}/stats/", **bearer(org_token))
    assert response.status_code == 200, response.content
    assert sum(count for _, count in response.json()) == 2
    v2 = {"field": "sum(quantity)", "category": "error", "statsPeriod": "1h"}
    response = client.get(f"{base}/stats_v2/", v2, **bearer(org_token))
    assert response.status_code == 200, response.content
    assert response.json()["groups"][0]["totals"] == {"sum(quantity)": 2}


@VERSIONS
@pytest.mark.django_db
def test_a_renamed_project_redirects_within_the_version(
    client: Client, project: Project, member_token: ApiToken, version: str
) -> None:
    old_slug = project.slug
    project.slug = "renamed"
    project.save()
    response = client.get(
        stats_path(version, project, old_slug), {"resolution": "1h"}, **bearer(member_token)
    )
    assert response.status_code == 302, response.content
    assert response["Location"] == stats_path(version, project) + "?resolution=1h"


@VERSIONS
@pytest.mark.django_db
def test_the_schema_of_each_version(client: Client, version: str) -> None:
    response = client.get(f"/api/{version}/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    assert set(schema["paths"]) - {f"/api/{version}/schema/"} == {
        f"/api/{version}/projects/{{organization_id_or_slug}}/{{project_id_or_slug}}/stats/",
        f"/api/{version}/organizations/{{organization_id_or_slug}}/projects/",
        f"/api/{version}/organizations/{{organization_id_or_slug}}/stats/",
        f"/api/{version}/organizations/{{organization_id_or_slug}}/stats_v2/",
        f"/api/{version}/organizations/{{organization_id_or_slug}}/stats-summary/",
    }


@VERSIONS
def test_the_schema_command_validates_without_warnings(tmp_path: Path, version: str) -> None:
    out = tmp_path / "schema.yml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--api-version", version, "--file", out
    )
    assert f"/api/{version}/projects/" in out.read_text()


@VERSIONS
@pytest.mark.django_db
def test_the_browsable_api_and_options(
    client: Client, project: Project, member_token: ApiToken, version: str
) -> None:
    assert client.options(stats_path(version, project)).status_code == 200
    client.force_login(member_token.user)
    response = client.get(stats_path(version, project), HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
