from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client

from project_stats.models import ApiToken, Project
from project_stats.throttling import ProjectStatsThrottle

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
