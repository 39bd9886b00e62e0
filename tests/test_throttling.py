from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client

from project_stats import tokens
from project_stats.models import ApiToken, Project
from project_stats.throttling import (
    AUTH_THROTTLE_SCOPE,
    FailedAuthenticationThrottle,
    ProjectStatsThrottle,
)

from .conftest import access_url, bearer
from .factories import ApiTokenFactory, OrganizationMemberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    # Throttle history lives in the default cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


def set_rate(settings, rate: str | None) -> None:  # type: ignore[no-untyped-def]
    rates = {"project_stats": rate} if rate is not None else {}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def test_no_rate_no_throttling_and_no_error(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_rate(settings, None)
    assert ProjectStatsThrottle().rate is None
    url = access_url(project.organization.slug, project.slug)
    for _ in range(30):
        assert client.get(url, **bearer(member_token)).status_code == 200


def test_a_rate_set_after_import_is_enforced_with_retry_after(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_rate(settings, "2/min")
    url = access_url(project.organization.slug, project.slug)
    assert client.get(url, **bearer(member_token)).status_code == 200
    assert client.get(url, **bearer(member_token)).status_code == 200
    response = client.get(url, **bearer(member_token))
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Request was throttled.")
    assert 0 < int(response["Retry-After"]) <= 60


def test_the_limit_is_per_user(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_rate(settings, "1/min")
    url = access_url(project.organization.slug, project.slug)
    other = OrganizationMemberFactory(organization=project.organization).user
    assert client.get(url, **bearer(member_token)).status_code == 200
    assert client.get(url, **bearer(member_token)).status_code == 429
    # Another token of the same user shares the budget; another user has their own.
    same_user = ApiTokenFactory(user=member_token.user)
    assert client.get(url, **bearer(same_user)).status_code == 429
    assert client.get(url, **bearer(ApiTokenFactory(user=other))).status_code == 200


def test_changing_the_rate_takes_effect_at_once(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    url = access_url(project.organization.slug, project.slug)
    set_rate(settings, "1/min")
    assert ProjectStatsThrottle().rate == "1/min"
    client.get(url, **bearer(member_token))
    assert client.get(url, **bearer(member_token)).status_code == 429
    set_rate(settings, None)
    assert client.get(url, **bearer(member_token)).status_code == 200


def test_unauthenticated_requests_are_401_not_throttled_first(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
) -> None:
    set_rate(settings, "1/min")
    url = access_url(project.organization.slug, project.slug)
    assert [client.get(url).status_code for _ in range(3)] == [401, 401, 401]


# Failed authentication, per client address.


def set_auth_rate(settings, rate: str | None) -> None:  # type: ignore[no-untyped-def]
    rates = {AUTH_THROTTLE_SCOPE: rate} if rate is not None else {}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def guess(member_token: ApiToken) -> str:
    """A well-formed wrong token with ``member_token``'s lookup prefix."""
    return member_token.prefix + "x" * (tokens.TOKEN_LENGTH - len(member_token.prefix))


def test_failed_authentication_is_unlimited_without_a_rate(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, None)
    url = access_url(project.organization.slug, project.slug)
    assert {client.get(url, **bearer(guess(member_token))).status_code for _ in range(30)} == {401}
    assert client.get(url, **bearer(member_token)).status_code == 200


def test_failed_authentication_is_throttled_per_address_with_retry_after(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, "3/min")
    url = access_url(project.organization.slug, project.slug)
    wrong = bearer(guess(member_token))
    malformed = {"HTTP_AUTHORIZATION": "Bearer"}
    statuses = [client.get(url, **headers).status_code for headers in (wrong, malformed, wrong)]
    assert statuses == [401, 401, 401]
    response = client.get(url, **wrong)
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Too many failed authentication attempts.")
    assert 0 < int(response["Retry-After"]) <= 60
    # The right token too, from that address: a guesser must not learn it hit.
    assert client.get(url, **bearer(member_token)).status_code == 429
    # Other addresses are not affected, nor are other authentication methods.
    assert client.get(url, REMOTE_ADDR="192.0.2.7", **bearer(member_token)).status_code == 200
    client.force_login(member_token.user)
    assert client.get(url).status_code == 200


def test_successes_do_not_count_and_failures_expire(
    settings,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, "2/min")
    now = [1_000_000.0]
    monkeypatch.setattr(FailedAuthenticationThrottle, "timer", lambda self: now[0])
    url = access_url(project.organization.slug, project.slug)
    for _ in range(10):
        assert client.get(url, **bearer(member_token)).status_code == 200
    assert client.get(url, **bearer(guess(member_token))).status_code == 401
    now[0] += 30
    assert client.get(url, **bearer(guess(member_token))).status_code == 401
    assert client.get(url, **bearer(member_token)).status_code == 429
    now[0] += 31  # the first failure has left the minute
    assert client.get(url, **bearer(member_token)).status_code == 200
    assert client.get(url, **bearer(guess(member_token))).status_code == 401
    assert client.get(url, **bearer(member_token)).status_code == 429


def test_requests_without_a_bearer_header_are_not_throttled_for_failures(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
) -> None:
    set_auth_rate(settings, "1/min")
    url = access_url(project.organization.slug, project.slug)
    assert [client.get(url).status_code for _ in range(3)] == [401, 401, 401]
    basic = {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}
    assert [client.get(url, **basic).status_code for _ in range(3)] == [401, 401, 401]
