from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from project_stats import tokens
from project_stats.authentication import BearerTokenAuthentication
from project_stats.models import ApiToken, Project

from .conftest import access_url, bearer
from .factories import ApiTokenFactory

pytestmark = pytest.mark.django_db

WWW_AUTHENTICATE = 'Bearer realm="api"'


def get(client: Client, project: Project, **headers: str):  # type: ignore[no-untyped-def]
    return client.get(access_url(project.organization.slug, project.slug), **headers)


def assert_401(response, detail: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": detail}
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE


def authenticate(authorization: str) -> tuple[object, object] | None:
    request = Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=authorization))
    return BearerTokenAuthentication().authenticate(request)


def test_a_valid_token_authenticates_as_its_user_with_the_token_as_auth(
    member_token: ApiToken,
) -> None:
    result = authenticate(f"Bearer {member_token.plaintext}")  # type: ignore[attr-defined]
    assert result is not None
    user, auth = result
    assert user == member_token.user
    assert isinstance(auth, ApiToken) and auth.pk == member_token.pk


@pytest.mark.parametrize("keyword", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_keyword_is_case_insensitive(
    client: Client, project: Project, member_token: ApiToken, keyword: str
) -> None:
    text = member_token.plaintext  # type: ignore[attr-defined]
    response = get(client, project, HTTP_AUTHORIZATION=f"{keyword} {text}")
    assert response.status_code == 200
    assert response.json() == {"project": project.slug}


def test_extra_whitespace_around_the_token_is_tolerated(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    text = member_token.plaintext  # type: ignore[attr-defined]
    response = get(client, project, HTTP_AUTHORIZATION=f"  Bearer   {text}  ")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        ("Bearer", "Invalid token header. No credentials provided."),
        ("Bearer ", "Invalid token header. No credentials provided."),
        ("bearer   ", "Invalid token header. No credentials provided."),
        ("Bearer a b", "Invalid token header. Token string should not contain spaces."),
        ("Bearer psk_x psk_y", "Invalid token header. Token string should not contain spaces."),
        ("Bearer " + "a" * 10_000, "Invalid token."),
        ("Bearer psk_" + "a" * 10_000, "Invalid token."),
        ("Bearer \xff\xfe", "Invalid token."),
        ("Bearer \x00\x01\x02", "Invalid token."),
        ("Bearer " + "\u2603" * 3, "Invalid token."),
        ("Bearer psk_\u00e9" + "a" * 42, "Invalid token."),
        ("Bearer nope", "Invalid token."),
    ],
)
def test_bad_bearer_headers_are_401_with_json_and_www_authenticate(
    client: Client, project: Project, member_token: ApiToken, authorization: str, detail: str
) -> None:
    assert_401(get(client, project, HTTP_AUTHORIZATION=authorization), detail)


def test_unknown_well_formed_token_is_401(client: Client, project: Project) -> None:
    assert_401(get(client, project, **bearer(tokens.generate())), "Invalid token.")


def test_a_tampered_token_is_401(client: Client, project: Project, member_token: ApiToken) -> None:
    text = member_token.plaintext  # type: ignore[attr-defined]
    tampered = text[:-1] + ("a" if text[-1] != "a" else "b")
    assert_401(get(client, project, **bearer(tampered)), "Invalid token.")


def test_revoked_token_is_401(client: Client, project: Project, member_token: ApiToken) -> None:
    ApiToken.objects.filter(pk=member_token.pk).revoke()
    assert_401(get(client, project, **bearer(member_token)), "Invalid token.")


def test_expired_token_is_401(client: Client, project: Project, member_token: ApiToken) -> None:
    ApiToken.objects.filter(pk=member_token.pk).update(expires_at=timezone.now())
    assert_401(get(client, project, **bearer(member_token)), "Token has expired.")


def test_a_token_not_yet_expired_works(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    ApiToken.objects.filter(pk=member_token.pk).update(
        expires_at=timezone.now() + timedelta(minutes=5)
    )
    assert get(client, project, **bearer(member_token)).status_code == 200


def test_inactive_user_is_401(client: Client, project: Project, member_token: ApiToken) -> None:
    member_token.user.is_active = False
    member_token.user.save()
    assert_401(get(client, project, **bearer(member_token)), "User inactive or deleted.")


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Token abc", "\xff\xfe", ""])
def test_other_schemes_are_not_ours_and_leave_the_request_anonymous(
    client: Client, project: Project, authorization: str
) -> None:
    assert authenticate(authorization) is None
    assert_401(
        get(client, project, HTTP_AUTHORIZATION=authorization),
        "Authentication credentials were not provided.",
    )


def test_a_bad_bearer_header_is_401_even_with_a_valid_session(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    client.force_login(member_token.user)
    assert get(client, project).status_code == 200
    assert_401(get(client, project, **bearer(tokens.generate())), "Invalid token.")


def test_failed_authentication_neither_logs_nor_echoes_the_token(
    client: Client, project: Project, member_token: ApiToken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    unknown = tokens.generate()
    ApiToken.objects.filter(pk=member_token.pk).update(expires_at=timezone.now())
    expired = member_token.plaintext  # type: ignore[attr-defined]
    for text in (unknown, expired, "Zm9vYmFy-not-a-token"):
        response = get(client, project, **bearer(text))
        assert response.status_code == 401
        assert text not in response.content.decode()
        assert text not in str(response.headers)
    assert caplog.records  # Django does log the 401s...
    for text in (unknown, expired, "Zm9vYmFy-not-a-token"):
        assert text not in caplog.text  # ...without the token


def test_last_used_is_set_on_use_then_written_at_most_once_a_minute(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    assert member_token.last_used is None
    assert get(client, project, **bearer(member_token)).status_code == 200
    member_token.refresh_from_db()
    first = member_token.last_used
    assert first is not None and timezone.now() - first < timedelta(seconds=10)

    with CaptureQueriesContext(connection) as queries:
        assert get(client, project, **bearer(member_token)).status_code == 200
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    member_token.refresh_from_db()
    assert member_token.last_used == first

    stale = timezone.now() - timedelta(seconds=61)
    ApiToken.objects.filter(pk=member_token.pk).update(last_used=stale)
    assert get(client, project, **bearer(member_token)).status_code == 200
    member_token.refresh_from_db()
    assert member_token.last_used is not None and member_token.last_used > stale


def test_failed_authentication_does_not_touch_last_used(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    ApiToken.objects.filter(pk=member_token.pk).update(expires_at=timezone.now())
    get(client, project, **bearer(member_token))
    member_token.refresh_from_db()
    assert member_token.last_used is None


def test_authenticate_header() -> None:
    request = Request(APIRequestFactory().get("/"))
    assert BearerTokenAuthentication().authenticate_header(request) == WWW_AUTHENTICATE


def test_a_token_for_another_user_does_not_leak_between_requests(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    outsider = ApiTokenFactory(scopes=["project:admin"])
    assert get(client, project, **bearer(member_token)).status_code == 200
    assert get(client, project, **bearer(outsider)).status_code == 404
    assert get(client, project).status_code == 401
