from __future__ import annotations

from django.urls import reverse

from .versioning import (
    org_token,
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


def test_each_version_is_a_namespace() -> None:
    kwargs = {"organization_id_or_slug": "acme", "project_id_or_slug": "web"}
    for version in ("0", "1"):
        assert (
            reverse(f"{version}:project_stats:project-stats", kwargs=kwargs)
            == f"/api/{version}/projects/acme/web/stats/"
        )
