"""The admin on a site whose user model has no ``username`` and which runs its own admin sites.

``admin.site`` does not register the user model, ``plain_admin`` registers
it without ``search_fields``, ``searching_admin`` with them (``userapp/admin.py``).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client

from project_stats.models import ApiToken, OrganizationMember, Project

from ..factories import ProjectFactory

pytestmark = pytest.mark.django_db

# URL prefix of each admin site -> whether it can autocomplete users.
SITES = {"/admin/": False, "/plain-admin/": False, "/searching-admin/": True}
each_site = pytest.mark.parametrize("prefix", list(SITES))

User = get_user_model()


@pytest.fixture
def superuser_client(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root@example.com", "password"))  # type: ignore[attr-defined]
    return client


@pytest.fixture
def ops_token() -> ApiToken:
    user = User.objects.create_user("ops@example.com", "password")  # type: ignore[attr-defined]
    token, _ = ApiToken.objects.issue(user, name="deploys")
    return token


def user_widget(html: str) -> str:
    """The tag of the form's ``user`` input: a raw id input or an autocomplete select."""
    match = re.search(r'<(?:input|select)[^>]*\bname="user"[^>]*>', html)
    assert match, "no user field in the form"
    return match.group(0)


def test_the_site_passes_its_checks() -> None:
    assert [m.id for m in run_checks() if m.id.startswith("admin.")] == []
    call_command("check", fail_level="WARNING")


def test_the_user_model_is_what_the_site_says() -> None:
    assert User.USERNAME_FIELD == "email"
    assert not any(field.name == "username" for field in User._meta.get_fields())


@each_site
def test_the_token_form_picks_users_as_the_site_allows(
    superuser_client: Client, prefix: str
) -> None:
    response = superuser_client.get(f"{prefix}project_stats/apitoken/add/")
    assert response.status_code == 200
    widget = user_widget(response.content.decode())
    if SITES[prefix]:
        assert widget.startswith("<select") and "admin-autocomplete" in widget
    else:
        # An id input, not a select listing every user; with a lookup link
        # where the site has a user admin to look in.
        assert widget.startswith('<input type="text"')
        assert ("vForeignKeyRawIdAdminField" in widget) is (prefix == "/plain-admin/")


@each_site
def test_the_member_forms_pick_users_as_the_site_allows(
    superuser_client: Client, project: Project, prefix: str
) -> None:
    html = superuser_client.get(f"{prefix}project_stats/organizationmember/add/").content.decode()
    autocompletes = "admin-autocomplete" in user_widget(html)
    assert autocompletes is SITES[prefix]
    # Organizations are searchable on every site: always an autocomplete.
    assert re.search(r'<select[^>]*name="organization"[^>]*admin-autocomplete', html)
    inline = superuser_client.get(
        f"{prefix}project_stats/organization/{project.organization.pk}/change/"
    ).content.decode()
    member_row = re.search(r'<(?:input|select)[^>]*name="members-__prefix__-user"[^>]*>', inline)
    assert member_row
    assert ("admin-autocomplete" in member_row.group(0)) is SITES[prefix]


@each_site
def test_tokens_are_found_by_the_users_email(
    superuser_client: Client, ops_token: ApiToken, prefix: str
) -> None:
    url = f"{prefix}project_stats/apitoken/"
    found = superuser_client.get(url, {"q": "ops@example"})
    assert found.status_code == 200
    assert ops_token.prefix in found.content.decode()
    missed = superuser_client.get(url, {"q": "nobody@example"})
    assert missed.status_code == 200
    assert ops_token.prefix not in missed.content.decode()


@each_site
def test_members_are_found_by_the_users_email(
    superuser_client: Client, ops_token: ApiToken, prefix: str
) -> None:
    project = ProjectFactory()
    OrganizationMember.objects.create(organization=project.organization, user=ops_token.user)
    response = superuser_client.get(
        f"{prefix}project_stats/organizationmember/", {"q": "ops@example"}
    )
    assert response.status_code == 200
    assert "ops@example.com" in response.content.decode()


@each_site
def test_a_token_is_issued_through_the_sites_own_admin(
    superuser_client: Client, prefix: str
) -> None:
    user = User.objects.create_user("ci@example.com", "password")  # type: ignore[attr-defined]
    response = superuser_client.post(
        f"{prefix}project_stats/apitoken/add/",
        {"user": user.pk, "name": "ci", "scopes": ["project:read"], "expires_at": ""},
    )
    assert response.status_code == 200, response.content
    token = ApiToken.objects.get(user=user)
    html = response.content.decode()
    assert f'href="{prefix}project_stats/apitoken/{token.pk}/change/"' in html


def test_the_searching_site_autocompletes_users_by_email(
    superuser_client: Client, ops_token: ApiToken
) -> None:
    response = superuser_client.get(
        "/searching-admin/autocomplete/",
        {
            "app_label": "project_stats",
            "model_name": "apitoken",
            "field_name": "user",
            "term": "ops",
        },
    )
    assert response.status_code == 200
    assert [row["text"] for row in response.json()["results"]] == ["ops@example.com"]


@each_site
def test_the_project_chart_on_each_site(
    superuser_client: Client, project: Project, prefix: str
) -> None:
    response = superuser_client.get(f"{prefix}project_stats/project/{project.pk}/change/")
    assert response.status_code == 200
    assert 'class="project-stats-chart"' in response.content.decode()
