from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from project_stats import tokens
from project_stats.constants import PROJECT_READ_SCOPES, SCOPES
from project_stats.models import ApiToken, Organization, Project
from project_stats.permissions import (
    HasScope,
    get_organization_or_404,
    get_project_or_404,
    request_scopes,
)

from .conftest import access_url, bearer
from .factories import (
    ApiTokenFactory,
    OrganizationFactory,
    OrganizationMemberFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

NOT_PROVIDED = (401, {"detail": "Authentication credentials were not provided."})
BAD_TOKEN = (401, {"detail": "Invalid token."})
EXPIRED = (401, {"detail": "Token has expired."})
INACTIVE = (401, {"detail": "User inactive or deleted."})
NOT_FOUND = (404, {"detail": "The requested resource does not exist"})
FORBIDDEN = (403, {"detail": "You do not have permission to perform this action."})


@dataclass
class World:
    """Organization ``ours`` with ``project``; organization ``theirs`` with ``their_project``."""

    ours: Organization
    project: Project
    theirs: Organization
    their_project: Project


@pytest.fixture
def world(project: Project) -> World:
    their_project = ProjectFactory(slug=f"{project.slug}-theirs")
    return World(project.organization, project, their_project.organization, their_project)


# Targets: (organization slug, project slug) given the world.
TARGETS = {
    "existing": lambda w: (w.ours.slug, w.project.slug),
    "unknown-org": lambda w: ("no-such-org", w.project.slug),
    "unknown-project": lambda w: (w.ours.slug, "no-such-project"),
    # A real project, asked for under an organization it is not in.
    "mismatched": lambda w: (w.ours.slug, w.their_project.slug),
    "other-org": lambda w: (w.theirs.slug, w.their_project.slug),
}


def member_of(org: Organization, **user: Any) -> Any:
    return OrganizationMemberFactory(organization=org, user=UserFactory(**user)).user


def token_for(user: Any, *scopes: str) -> dict[str, str]:
    return bearer(ApiTokenFactory(user=user, scopes=list(scopes)))


def setup_caller(caller: str, client: Client, w: World) -> dict[str, str]:
    """Prepare ``client`` as ``caller``; returns the headers to send."""
    if caller == "anonymous":
        return {}
    if caller == "bad-token":
        return bearer(tokens.generate())
    if caller == "expired":
        token = ApiTokenFactory(user=member_of(w.ours), scopes=list(SCOPES))
        ApiToken.objects.filter(pk=token.pk).update(expires_at=token.created)
        return bearer(token)
    if caller == "inactive":
        user = member_of(w.ours)
        headers = token_for(user, *SCOPES)
        user.is_active = False
        user.save()
        return headers
    if caller == "wrong-org-member":
        return token_for(member_of(w.theirs), *SCOPES)
    if caller.startswith("member:"):
        return token_for(member_of(w.ours), *caller.removeprefix("member:").split("+"))
    if caller == "superuser:project:read":
        return token_for(UserFactory(is_superuser=True, is_staff=True), "project:read")
    if caller == "superuser:org:read":
        return token_for(UserFactory(is_superuser=True, is_staff=True), "org:read")
    if caller == "session-member":
        client.force_login(member_of(w.ours))
        return {}
    if caller == "session-non-member":
        client.force_login(member_of(w.theirs))
        return {}
    if caller == "session-superuser":
        client.force_login(UserFactory(is_superuser=True, is_staff=True))
        return {}
    raise AssertionError(caller)


def row(
    existing: tuple[int, dict[str, str]] | str,
    other_org: tuple[int, dict[str, str]] = NOT_FOUND,
) -> dict[str, tuple[int, dict[str, str]] | str]:
    """Expected outcomes per target; a failure of authentication applies everywhere."""
    if existing in (NOT_PROVIDED, BAD_TOKEN, EXPIRED, INACTIVE):
        return dict.fromkeys(TARGETS, existing)
    return {
        "existing": existing,
        "unknown-org": NOT_FOUND,
        "unknown-project": NOT_FOUND,
        "mismatched": NOT_FOUND,
        "other-org": other_org,
    }


OK = "ok"  # 200 with the project's slug
MATRIX = {
    "anonymous": row(NOT_PROVIDED),
    "bad-token": row(BAD_TOKEN),
    "expired": row(EXPIRED),
    "inactive": row(INACTIVE),
    "wrong-org-member": row(NOT_FOUND, other_org=OK),  # type: ignore[arg-type]
    "member:org:read": row(FORBIDDEN),
    "member:project:read": row(OK),
    "member:project:write": row(OK),
    "member:project:admin": row(OK),
    "member:org:read+project:read": row(OK),
    "superuser:project:read": row(OK, other_org=OK),  # type: ignore[arg-type]
    "superuser:org:read": row(FORBIDDEN, other_org=FORBIDDEN),
    "session-member": row(OK),
    "session-non-member": row(NOT_FOUND, other_org=OK),  # type: ignore[arg-type]
    "session-superuser": row(OK, other_org=OK),  # type: ignore[arg-type]
}
CASES = [
    pytest.param(caller, target, expected, id=f"{caller}-{target}")
    for caller, outcomes in MATRIX.items()
    for target, expected in outcomes.items()
]


@pytest.mark.parametrize(("caller", "target", "expected"), CASES)
def test_access_matrix(
    client: Client, world: World, caller: str, target: str, expected: Any
) -> None:
    headers = setup_caller(caller, client, world)
    organization_slug, project_slug = TARGETS[target](world)
    response = client.get(access_url(organization_slug, project_slug), **headers)
    body = response.json()
    if expected == OK:
        assert (response.status_code, body) == (200, {"project": project_slug})
    else:
        assert (response.status_code, body) == expected
    if response.status_code == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    else:
        assert "WWW-Authenticate" not in response


def test_the_matrix_covers_every_scope() -> None:
    assert {c.removeprefix("member:") for c in MATRIX if c.startswith("member:")} >= set(SCOPES)


def test_anonymous_requests_are_refused_before_any_query(
    client: Client, world: World, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        response = client.get(access_url(world.ours.slug, world.project.slug))
    assert response.status_code == 401


def test_malformed_tokens_are_refused_before_any_query(
    client: Client, world: World, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        response = client.get(access_url("no-such-org", "x"), HTTP_AUTHORIZATION="Bearer \xff\xfe")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/api/0/test-access/projects/%00/x/",
        "/api/0/test-access/projects/x/%00/",
        "/api/0/test-access/projects/org%00x/p/",
        "/api/0/test-access/projects/" + "o" * 5000 + "/p/",
        "/api/0/test-access/projects/%C3%A9t%C3%A9/%E2%98%83/",
        "/api/0/test-access/projects/%FF%FE/p/",
    ],
)
def test_junk_slugs_are_404_not_500(client: Client, world: World, path: str) -> None:
    client.force_login(member_of(world.ours))
    response = client.get(path)
    assert (response.status_code, response.json()) == NOT_FOUND


# --- get_project_or_404 / get_organization_or_404 -----------------------------


def test_get_project_or_404_is_one_query(world: World, django_assert_num_queries: Any) -> None:
    user = member_of(world.ours)
    superuser = UserFactory(is_superuser=True)
    with django_assert_num_queries(1):
        project = get_project_or_404(user, world.ours.slug, world.project.slug)
        assert project.organization == world.ours  # fetched with it
    with django_assert_num_queries(1):
        assert get_project_or_404(superuser, world.theirs.slug, world.their_project.slug)
    with django_assert_num_queries(1), pytest.raises(NotFound):
        get_project_or_404(user, world.theirs.slug, world.their_project.slug)


def test_get_project_or_404_message_is_the_same_whatever_is_missing(world: World) -> None:
    user = member_of(world.ours)
    details = set()
    for organization_slug, project_slug in (
        ("no-such-org", world.project.slug),
        (world.ours.slug, "no-such-project"),
        (world.theirs.slug, world.their_project.slug),
    ):
        with pytest.raises(NotFound) as raised:
            get_project_or_404(user, organization_slug, project_slug)
        details.add(str(raised.value.detail))
    assert details == {"The requested resource does not exist"}


def test_get_project_or_404_refuses_anonymous_even_for_an_organization_without_members(
    django_assert_num_queries: Any,
) -> None:
    # A membership join against a missing user must not match member-less rows.
    lonely = ProjectFactory()
    assert not lonely.organization.members.exists()
    with django_assert_num_queries(0), pytest.raises(NotFound):
        get_project_or_404(AnonymousUser(), lonely.organization.slug, lonely.slug)


def test_get_project_or_404_refuses_an_inactive_member(world: World) -> None:
    user = member_of(world.ours, is_active=False)
    with pytest.raises(NotFound):
        get_project_or_404(user, world.ours.slug, world.project.slug)
    superuser = UserFactory(is_superuser=True, is_active=False)
    with pytest.raises(NotFound):
        get_project_or_404(superuser, world.ours.slug, world.project.slug)


def test_membership_in_one_organization_does_not_open_another(world: World) -> None:
    user = member_of(world.ours)
    OrganizationMemberFactory(organization=OrganizationFactory())  # someone else's membership
    with pytest.raises(NotFound):
        get_project_or_404(user, world.theirs.slug, world.their_project.slug)
    OrganizationMemberFactory(organization=world.theirs, user=user)
    assert get_project_or_404(user, world.theirs.slug, world.their_project.slug)


@pytest.mark.parametrize("slug", ["", "\x00", "a\x00b", "a" * 51, "\ud800", None, 5])
def test_get_project_or_404_refuses_impossible_slugs_without_a_query(
    world: World, slug: Any, django_assert_num_queries: Any
) -> None:
    superuser = UserFactory(is_superuser=True)
    with django_assert_num_queries(0):
        with pytest.raises(NotFound):
            get_project_or_404(superuser, slug, world.project.slug)
        with pytest.raises(NotFound):
            get_project_or_404(superuser, world.ours.slug, slug)
        with pytest.raises(NotFound):
            get_organization_or_404(superuser, slug)


def test_get_organization_or_404(world: World, django_assert_num_queries: Any) -> None:
    user = member_of(world.ours)
    with django_assert_num_queries(1):
        assert get_organization_or_404(user, world.ours.slug) == world.ours
    for slug in (world.theirs.slug, "no-such-org"):
        with django_assert_num_queries(1), pytest.raises(NotFound) as raised:
            get_organization_or_404(user, slug)
        assert str(raised.value.detail) == "The requested resource does not exist"
    superuser = UserFactory(is_superuser=True)
    assert get_organization_or_404(superuser, world.theirs.slug) == world.theirs
    with pytest.raises(NotFound):
        get_organization_or_404(AnonymousUser(), world.ours.slug)
    with pytest.raises(NotFound):
        get_organization_or_404(member_of(world.ours, is_active=False), world.ours.slug)


# --- request_scopes and HasScope ----------------------------------------------


def drf_request(user: Any = None, token: Any = None) -> Request:
    django_request = APIRequestFactory().get("/")
    if user is not None:
        force_authenticate(django_request, user=user, token=token)
    view = APIView()
    view.permission_classes = []
    request = view.initialize_request(django_request)
    return request


def session_request(user: Any) -> Request:
    django_request = APIRequestFactory().get("/")
    django_request.user = user
    return Request(django_request, authenticators=[SessionAuthentication()])


def test_request_scopes() -> None:
    user = UserFactory()
    token = ApiTokenFactory(user=user, scopes=["org:read", "project:write"])
    assert request_scopes(drf_request(user, token)) == {"org:read", "project:write"}
    assert request_scopes(session_request(user)) == set(SCOPES)
    assert request_scopes(session_request(AnonymousUser())) == frozenset()
    assert request_scopes(drf_request()) == frozenset()
    # Other authentication classes grant nothing here, credential or not.
    assert request_scopes(drf_request(user, "some-other-token")) == frozenset()
    assert request_scopes(drf_request(user)) == frozenset()


def basic(user: Any) -> dict[str, str]:
    credentials = base64.b64encode(f"{user.get_username()}:password".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {credentials}"}


@pytest.fixture
def remote_user_backend(settings) -> None:  # type: ignore[no-untyped-def]
    settings.AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        "django.contrib.auth.backends.RemoteUserBackend",
    ]


def test_other_authentication_classes_get_no_scopes(
    client: Client, world: World, remote_user_backend: None
) -> None:
    member = member_of(world.ours)
    url = reverse("test-access-other-authentication", args=[world.ours.slug, world.project.slug])
    for headers in (basic(member), {"REMOTE_USER": member.get_username()}):
        response = client.get(url, **headers)
        assert (response.status_code, response.json()) == FORBIDDEN
    # Those callers did authenticate (a wrong password is a 401); only scopes are missing.
    assert client.get(url, HTTP_AUTHORIZATION="Basic eDp5").status_code == 401


def test_a_site_can_give_an_authentication_class_every_scope(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    world: World,
    remote_user_backend: None,
) -> None:
    settings.PROJECT_STATS = {
        "FULL_SCOPE_AUTHENTICATION_CLASSES": [
            "rest_framework.authentication.SessionAuthentication",
            "rest_framework.authentication.BasicAuthentication",
        ]
    }
    member = member_of(world.ours)
    url = reverse("test-access-other-authentication", args=[world.ours.slug, world.project.slug])
    assert client.get(url, **basic(member)).json() == {"project": world.project.slug}
    assert client.get(url, REMOTE_USER=member.get_username()).status_code == 403
    # Membership still decides.
    other = reverse(
        "test-access-other-authentication", args=[world.theirs.slug, world.their_project.slug]
    )
    assert client.get(other, **basic(member)).status_code == 404


def test_request_scopes_ignores_unknown_stored_scopes() -> None:
    token = ApiTokenFactory(scopes=["project:read"])
    ApiToken.objects.filter(pk=token.pk).update(scopes=["project:read", "superpowers", 7])
    token.refresh_from_db()
    assert request_scopes(drf_request(token.user, token)) == {"project:read"}


class ScopedView(APIView):
    required_scopes = PROJECT_READ_SCOPES


class ListScopedView(APIView):
    required_scopes = ["project:write", "project:admin"]


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["org:read"], False),
        (["project:read"], True),
        (["project:write"], True),
        (["project:admin"], True),
        (list(SCOPES), True),
    ],
)
def test_has_scope_object_permission(scopes: list[str], allowed: bool, project: Project) -> None:
    token = ApiTokenFactory(scopes=scopes)
    request = drf_request(token.user, token)
    permission = HasScope()
    assert permission.has_permission(request, ScopedView())
    assert permission.has_object_permission(request, ScopedView(), project) is allowed


def test_has_scope_accepts_any_collection_of_scopes(project: Project) -> None:
    token = ApiTokenFactory(scopes=["project:read"])
    request = drf_request(token.user, token)
    assert not HasScope().has_object_permission(request, ListScopedView(), project)
    token.scopes = ["project:admin"]
    assert HasScope().has_object_permission(request, ListScopedView(), project)


def test_has_scope_requires_authentication() -> None:
    assert not HasScope().has_permission(drf_request(), ScopedView())


@pytest.mark.parametrize("required", [None, "project:read", frozenset(), [], 5])
def test_has_scope_refuses_a_view_without_a_scope_set(required: Any, project: Project) -> None:
    view = APIView()
    if required is not None:
        view.required_scopes = required  # type: ignore[attr-defined]
    user = UserFactory()
    with pytest.raises(ImproperlyConfigured):
        HasScope().has_object_permission(drf_request(user), view, project)
