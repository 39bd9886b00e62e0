from __future__ import annotations

import pytest
from django.test import Client

from project_stats.models import ApiToken, Project

from ..conftest import bearer
from .versioning import (
    org_token,
    stats_path,
    test_a_renamed_project_redirects_within_the_version,
    test_organization_endpoints,
    test_project_stats,
    test_the_browsable_api_and_options,
    test_the_schema_command_validates_without_warnings,
    test_the_schema_of_each_version,
)

__all__ = [
    "org_token",
    "test_a_renamed_project_redirects_within_the_version",
    "test_organization_endpoints",
    "test_the_browsable_api_and_options",
    "test_project_stats",
    "test_the_schema_command_validates_without_warnings",
    "test_the_schema_of_each_version",
]


@pytest.mark.django_db
def test_an_unknown_version_is_a_json_404(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    response = client.get(stats_path("7", project), **bearer(member_token))
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid version in URL path."}
