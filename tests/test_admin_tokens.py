from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.forms import modelform_factory
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from project_stats import tokens
from project_stats.admin import ApiTokenAdmin, ApiTokenForm
from project_stats.models import ApiToken, Project

from .conftest import access_url, bearer
from .factories import ApiTokenFactory, OrganizationMemberFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:project_stats_apitoken_changelist"
ADD = "admin:project_stats_apitoken_add"
CHANGE = "admin:project_stats_apitoken_change"


def every_stored_value() -> str:
    """The text of every row of every table: where a leaked secret would show up."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            dump.append(repr(cursor.fetchall()))
    return "\n".join(dump)


def add_form(owner: Any, /, **overrides: Any) -> dict[str, Any]:
    data = {
        "user": owner.pk,
        "name": "deploy",
        "scopes": ["project:read"],
        "expires_at_0": "",
        "expires_at_1": "",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def test_changelist_shows_tokens_by_prefix_and_never_the_secret(admin_client: Client) -> None:
    token = ApiTokenFactory(name="ci", scopes=["org:read", "project:write"])
    token.record_use()
    revoked = ApiTokenFactory(name="old")
    ApiToken.objects.filter(pk=revoked.pk).revoke()
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"{token.prefix}\u2026" in html
    assert token.user.username in html
    assert "org:read project:write" in html
    assert "revoked" in html and "active" in html
    for issued in (token, revoked):
        assert issued.plaintext not in html
        assert issued.plaintext[tokens.LOOKUP_PREFIX_LENGTH :] not in html
        assert issued.digest not in html


def test_change_page_shows_no_secret_and_no_digest(admin_client: Client) -> None:
    token = ApiTokenFactory()
    response = admin_client.get(reverse(CHANGE, args=[token.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert token.prefix in html
    assert token.plaintext not in html
    assert token.plaintext[tokens.LOOKUP_PREFIX_LENGTH :] not in html
    assert token.digest not in html
    # The owner is read-only once the token exists.
    assert 'name="user"' not in html
    assert 'name="scopes"' in html


def test_add_form_renders(admin_client: Client) -> None:
    response = admin_client.get(reverse(ADD))
    assert response.status_code == 200
    html = response.content.decode()
    for scope in ("org:read", "project:read", "project:write", "project:admin"):
        assert f'value="{scope}"' in html


def test_adding_shows_the_plaintext_once_and_stores_it_nowhere(
    admin_client: Client, project: Project
) -> None:
    owner = OrganizationMemberFactory(organization=project.organization).user
    response = admin_client.post(reverse(ADD), add_form(owner, scopes=["project:read"]))
    assert response.status_code == 200
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.scopes) == (owner, "deploy", ["project:read"])
    html = response.content.decode()
    [plaintext] = [t for t in html.split('"') if tokens.is_well_formed(t)]
    assert html.count(plaintext) == 1
    assert token.digest == tokens.digest(plaintext)
    assert "no-store" in response["Cache-Control"]
    # Not in a cookie (messages), nor anywhere in the database (sessions, admin log).
    assert all(plaintext not in morsel.value for morsel in response.cookies.values())
    assert all(plaintext not in morsel.value for morsel in admin_client.cookies.values())
    assert plaintext not in every_stored_value()
    assert token.prefix in every_stored_value()  # the scan does see the row
    assert all(plaintext not in str(entry) for entry in LogEntry.objects.all())
    # Gone from every later page.
    for url in (reverse(CHANGELIST), reverse(CHANGE, args=[token.pk]), reverse(ADD)):
        assert plaintext not in admin_client.get(url).content.decode()
    # And it works.
    api = Client()
    assert api.get(
        access_url(project.organization.slug, project.slug), **bearer(plaintext)
    ).json() == {"project": project.slug}


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"scopes": []}, "This field is required."),
        ({"scopes": ["project:delete"]}, "Select a valid choice."),
        ({"user": ""}, "This field is required."),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"expires_at_0": "2000-01-01", "expires_at_1": "00:00:00"}, "must expire in the future"),
    ],
)
def test_add_refuses_bad_input(admin_client: Client, overrides: dict[str, Any], error: str) -> None:
    response = admin_client.post(reverse(ADD), add_form(UserFactory(), **overrides))
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not ApiToken.objects.exists()


def staff_client(*codenames: str) -> tuple[Client, Any]:
    """A logged-in staff user who is not a superuser, with these token permissions."""
    user = UserFactory(is_staff=True, is_superuser=False)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="project_stats", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client, user


def test_a_staff_user_issues_tokens_only_for_themself(project: Project) -> None:
    client, staff = staff_client("add_apitoken", "view_apitoken")
    superuser = UserFactory(is_staff=True, is_superuser=True)
    colleague = OrganizationMemberFactory(organization=project.organization).user
    page = client.get(reverse(ADD))
    assert page.status_code == 200
    html = page.content.decode()
    # Only themself to choose from, and no user search.
    assert f'<option value="{staff.pk}" selected>' in html
    assert f'value="{superuser.pk}"' not in html and f'value="{colleague.pk}"' not in html
    assert "autocomplete" not in html
    for other in (superuser, colleague):
        response = client.post(reverse(ADD), add_form(other, scopes=["project:admin"]))
        assert response.status_code == 200
        assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()
    response = client.post(reverse(ADD), add_form(staff))
    assert response.status_code == 200 and "API token created" in response.content.decode()
    assert ApiToken.objects.get().user == staff


def test_the_form_applies_the_owner_rules_whatever_the_choices() -> None:
    # Should the choices ever widen, the form still refuses on its own.
    staff = UserFactory(is_staff=True)
    superuser = UserFactory(is_superuser=True)
    request = RequestFactory().get("/")
    request.user = staff
    form_class = ApiTokenAdmin(ApiToken, admin.site).get_form(
        request, fields=["user", "name", "scopes", "expires_at"]
    )
    form_class.base_fields["user"].queryset = get_user_model().objects.all()
    form = form_class(data=add_form(superuser))
    assert not form.is_valid()
    assert form.errors["user"] == ["Only superusers may issue tokens for other users."]


def test_a_superuser_issues_for_others_but_never_for_an_inactive_user(
    admin_client: Client,
) -> None:
    inactive = UserFactory(is_active=False)
    response = admin_client.post(reverse(ADD), add_form(inactive))
    assert response.status_code == 200
    assert escape(f"User {inactive.username!r} is inactive.") in response.content.decode()
    assert not ApiToken.objects.exists()
    other = UserFactory()
    assert admin_client.post(reverse(ADD), add_form(other)).status_code == 200
    assert ApiToken.objects.get().user == other


def test_issue_applies_the_same_rules() -> None:
    staff, other, superuser = (
        UserFactory(is_staff=True),
        UserFactory(),
        UserFactory(is_superuser=True),
    )
    with pytest.raises(ValueError, match="Only superusers may issue tokens for other users."):
        ApiToken.objects.issue(other, issued_by=staff)
    assert ApiToken.objects.issue(staff, issued_by=staff)[0].user == staff
    assert ApiToken.objects.issue(other, issued_by=superuser)[0].user == other
    assert ApiToken.objects.issue(other)[0].user == other  # the site itself


def test_add_with_an_expiry(admin_client: Client) -> None:
    when = timezone.now() + timedelta(days=3)
    data = add_form(
        UserFactory(),
        scopes=["project:admin", "org:read"],
        expires_at_0=when.strftime("%Y-%m-%d"),
        expires_at_1=when.strftime("%H:%M:%S"),
    )
    assert admin_client.post(reverse(ADD), data).status_code == 200
    token = ApiToken.objects.get()
    assert token.scopes == ["org:read", "project:admin"]
    assert token.expires_at == when.replace(microsecond=0)


def test_editing_keeps_the_secret_and_the_owner(admin_client: Client) -> None:
    token = ApiTokenFactory(scopes=["project:read"])
    data = {
        "name": "renamed",
        "scopes": ["project:write"],
        "expires_at_0": "",
        "expires_at_1": "",
        "user": UserFactory().pk,  # ignored: read-only
        "_save": "Save",
    }
    response = admin_client.post(reverse(CHANGE, args=[token.pk]), data)
    assert response.status_code == 302
    edited = ApiToken.objects.get()
    assert (edited.name, edited.scopes) == ("renamed", ["project:write"])
    assert (edited.user_id, edited.digest, edited.prefix) == (
        token.user_id,
        token.digest,
        token.prefix,
    )


def test_revoke_action(admin_client: Client, project: Project) -> None:
    member = OrganizationMemberFactory(organization=project.organization).user
    doomed = ApiTokenFactory(user=member)
    kept = ApiTokenFactory(user=member)
    url = access_url(project.organization.slug, project.slug)
    assert Client().get(url, **bearer(doomed)).status_code == 200

    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "revoke_selected", "_selected_action": [doomed.pk]},
        follow=True,
    )
    assert "Revoked 1 token(s)." in response.content.decode()
    doomed.refresh_from_db()
    kept.refresh_from_db()
    assert doomed.revoked_at is not None and kept.revoked_at is None
    assert Client().get(url, **bearer(doomed)).status_code == 401
    assert Client().get(url, **bearer(kept)).status_code == 200


def test_deleting_also_revokes(admin_client: Client, project: Project) -> None:
    member = OrganizationMemberFactory(organization=project.organization).user
    token = ApiTokenFactory(user=member)
    response = admin_client.post(
        reverse("admin:project_stats_apitoken_delete", args=[token.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    url = access_url(project.organization.slug, project.slug)
    assert Client().get(url, **bearer(token)).status_code == 401


def test_search_by_pasted_token_or_prefix(admin_client: Client) -> None:
    wanted, other = ApiTokenFactory(), ApiTokenFactory()
    for term in (wanted.plaintext, wanted.prefix):
        response = admin_client.get(reverse(CHANGELIST), {"q": term})
        results = list(response.context["cl"].result_list)
        assert results == [wanted], term
    assert other not in results


def test_status_filter(admin_client: Client) -> None:
    active = ApiTokenFactory()
    expired = ApiTokenFactory()
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    revoked = ApiTokenFactory()
    ApiToken.objects.filter(pk=revoked.pk).revoke()
    for status, expected in (("active", active), ("expired", expired), ("revoked", revoked)):
        response = admin_client.get(reverse(CHANGELIST), {"status": status})
        assert list(response.context["cl"].result_list) == [expected]


# Changing a token: the owner rule of issuing applies to every change that
# gives a token more (scopes, time), and others' tokens are read-only to
# staff users who are not superusers.


def change_form(token: ApiToken, /, **overrides: Any) -> dict[str, Any]:
    # The admin reads and writes times in the site's zone.
    expires = timezone.localtime(token.expires_at) if token.expires_at else None
    data: dict[str, Any] = {
        "name": token.name,
        "scopes": list(token.scopes),
        "expires_at_0": expires.strftime("%Y-%m-%d") if expires else "",
        "expires_at_1": expires.strftime("%H:%M:%S") if expires else "",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def later(days: int = 30) -> dict[str, str]:
    when = timezone.localtime() + timedelta(days=days)
    return {"expires_at_0": when.strftime("%Y-%m-%d"), "expires_at_1": when.strftime("%H:%M:%S")}


def expired_token(user: Any, scopes: list[str]) -> ApiToken:
    token = ApiTokenFactory(
        user=user, scopes=scopes, expires_at=timezone.now() + timedelta(hours=1)
    )
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(days=1))
    token.refresh_from_db()
    return token


def unchanged(token: ApiToken) -> bool:
    stored = ApiToken.objects.get(pk=token.pk)
    return (stored.name, stored.scopes, stored.expires_at, stored.revoked_at) == (
        token.name,
        token.scopes,
        token.expires_at,
        token.revoked_at,
    )


def test_a_staff_user_cannot_rearm_or_widen_a_superusers_token(project: Project) -> None:
    client, _ = staff_client("change_apitoken")
    superuser = UserFactory(is_staff=True, is_superuser=True)
    token = expired_token(superuser, ["project:read"])
    url = access_url(project.organization.slug, project.slug)
    assert Client().get(url, **bearer(token)).status_code == 401

    page = client.get(reverse(CHANGE, args=[token.pk]))
    assert page.status_code == 200  # visible, read-only: no inputs, no save button
    html = page.content.decode()
    assert token.prefix in html
    assert 'name="scopes"' not in html and 'name="expires_at_0"' not in html
    assert 'name="_save"' not in html
    response = client.post(
        reverse(CHANGE, args=[token.pk]),
        change_form(token, scopes=["org:read", "project:admin"], **later()),
    )
    assert response.status_code == 403
    assert unchanged(token)
    assert Client().get(url, **bearer(token)).status_code == 401


def test_a_staff_user_revokes_and_deletes_only_their_own_tokens() -> None:
    client, staff = staff_client("change_apitoken", "delete_apitoken")
    own = ApiTokenFactory(user=staff)
    others = ApiTokenFactory(user=UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        reverse(CHANGELIST),
        {"action": "revoke_selected", "_selected_action": [own.pk, others.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert "Revoked 1 token(s)." in html
    assert "1 token(s) of other users left as they were" in html
    own.refresh_from_db()
    assert own.revoked_at is not None
    assert unchanged(others)
    delete = reverse("admin:project_stats_apitoken_delete", args=[others.pk])
    assert client.get(delete).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    response = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [others.pk], "post": "yes"},
    )
    assert response.status_code == 403
    assert ApiToken.objects.filter(pk=others.pk).exists()
    own_delete = reverse("admin:project_stats_apitoken_delete", args=[own.pk])
    assert client.post(own_delete, {"post": "yes"}).status_code == 302
    assert not ApiToken.objects.filter(pk=own.pk).exists()


def test_a_staff_user_edits_their_own_token_but_never_rearms_it_once_expired(
    project: Project,
) -> None:
    client, staff = staff_client("change_apitoken")
    OrganizationMemberFactory(organization=project.organization, user=staff)
    live = ApiTokenFactory(
        user=staff, scopes=["org:read"], expires_at=timezone.now() + timedelta(1)
    )
    response = client.post(
        reverse(CHANGE, args=[live.pk]),
        change_form(live, name="wider", scopes=["org:read", "project:read"], **later()),
    )
    assert response.status_code == 302  # what they could issue themselves anyway
    live.refresh_from_db()
    assert (live.name, live.scopes) == ("wider", ["org:read", "project:read"])
    assert live.expires_at is not None and live.expires_at > timezone.now() + timedelta(days=29)

    token = expired_token(staff, ["project:read"])
    for overrides in (later(), {"expires_at_0": "", "expires_at_1": ""}):
        response = client.post(reverse(CHANGE, args=[token.pk]), change_form(token, **overrides))
        assert response.status_code == 200
        assert "Only superusers may extend an expired token" in response.content.decode()
        assert unchanged(token)
    url = access_url(project.organization.slug, project.slug)
    assert Client().get(url, **bearer(token)).status_code == 401
    # Narrowing it, or renaming it, is still theirs to do.
    response = client.post(
        reverse(CHANGE, args=[token.pk]), change_form(token, name="old", scopes=["org:read"])
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.scopes) == ("old", ["org:read"])


def test_a_superuser_rearms_an_expired_token_of_an_active_user(
    admin_client: Client, project: Project
) -> None:
    member = OrganizationMemberFactory(organization=project.organization).user
    token = expired_token(member, ["project:read"])
    response = admin_client.post(reverse(CHANGE, args=[token.pk]), change_form(token, **later()))
    assert response.status_code == 302
    url = access_url(project.organization.slug, project.slug)
    assert Client().get(url, **bearer(token)).status_code == 200


def test_nobody_widens_or_extends_the_token_of_an_inactive_user(admin_client: Client) -> None:
    owner = UserFactory()
    token = ApiTokenFactory(
        user=owner, scopes=["org:read", "project:read"], expires_at=timezone.now() + timedelta(1)
    )
    owner.is_active = False
    owner.save()
    url = reverse(CHANGE, args=[token.pk])
    for overrides, error in (
        ({"scopes": ["org:read", "project:admin"]}, "Scopes cannot be added to this token."),
        (later(), "This token&#x27;s expiry cannot be extended."),
        ({"expires_at_0": "", "expires_at_1": ""}, "This token&#x27;s expiry cannot be extended."),
    ):
        response = admin_client.post(url, change_form(token, **overrides))
        assert response.status_code == 200
        html = response.content.decode()
        assert error in html
        assert escape(f"User {owner.username!r} is inactive.") in html
        assert unchanged(token)
    # Narrowing takes nothing from anyone.
    response = admin_client.post(url, change_form(token, scopes=["org:read"], **later(-1)))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.scopes == ["org:read"] and token.is_expired()


def test_the_change_form_applies_the_owner_rule_whatever_the_permissions() -> None:
    # Should has_change_permission ever let a staff user in, the form still refuses.
    staff = UserFactory(is_staff=True)
    token = ApiTokenFactory(
        user=UserFactory(is_superuser=True),
        scopes=["project:read"],
        expires_at=timezone.now() + timedelta(days=1),
    )
    form_class = modelform_factory(
        ApiToken, form=ApiTokenForm, fields=["name", "scopes", "expires_at"]
    )
    form_class.issued_by = staff  # as ApiTokenAdmin.get_form sets it

    def data(**overrides: Any) -> dict[str, Any]:
        # This form's expiry is one input, not the admin's date and time pair.
        fields = change_form(token, **overrides)
        fields["expires_at"] = f"{fields.pop('expires_at_0')} {fields.pop('expires_at_1')}"
        return fields

    rule = "Only superusers may issue tokens for other users."
    form = form_class(data=data(scopes=["project:admin"]), instance=token)
    assert not form.is_valid()
    assert form.errors == {"scopes": [f"Scopes cannot be added to this token. {rule}"]}
    form = form_class(data=data(**later()), instance=token)
    assert not form.is_valid()
    assert form.errors == {"expires_at": [f"This token's expiry cannot be extended. {rule}"]}
    # Taking away is not giving: the view alone refuses such a change (403 above).
    form = form_class(data=data(name="renamed", **later(-1)), instance=token)
    assert form.is_valid()
