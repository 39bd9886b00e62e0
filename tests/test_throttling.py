from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from project_stats import tokens
from project_stats.authentication import BearerTokenAuthentication
from project_stats.models import ApiToken, EventCount, Project
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
    for headers in (wrong, malformed):
        response = client.get(url, **headers)
        assert response.status_code == 429
        assert response.json()["detail"].startswith("Too many failed authentication attempts.")
        assert 0 < int(response["Retry-After"]) <= 60
    # Other addresses are not affected, nor are other authentication methods.
    assert client.get(url, REMOTE_ADDR="192.0.2.7", **wrong).status_code == 401
    client.force_login(member_token.user)
    assert client.get(url).status_code == 200


def test_a_valid_token_is_never_refused_by_the_failure_throttle(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, "1/min")
    url = access_url(project.organization.slug, project.slug)
    expired = ApiTokenFactory(user=member_token.user)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    revoked = ApiTokenFactory(user=member_token.user)
    ApiToken.objects.filter(pk=revoked.pk).revoke()
    assert client.get(url, **bearer(guess(member_token))).status_code == 401
    assert client.get(url, **bearer(guess(member_token))).status_code == 429
    # Throttled: the address's valid token still works, the others do not.
    assert client.get(url, **bearer(member_token)).status_code == 200
    assert client.get(url, **bearer(expired)).status_code == 429
    assert client.get(url, **bearer(revoked)).status_code == 429
    assert client.get(url, **bearer(member_token)).status_code == 200


def test_x_forwarded_for_is_not_believed_without_num_proxies(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, "2/min")
    url = access_url(project.organization.slug, project.slug)
    attacker = {"REMOTE_ADDR": "203.0.113.66", **bearer(guess(member_token))}
    # Rotating the header does not escape the limit...
    statuses = [
        client.get(url, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}", **attacker).status_code
        for n in range(4)
    ]
    assert statuses == [401, 401, 429, 429]
    # ...and naming a victim's address does not count against the victim.
    for _ in range(3):
        client.get(url, HTTP_X_FORWARDED_FOR="192.0.2.10", **attacker)
    victim = {"REMOTE_ADDR": "192.0.2.10"}
    assert client.get(url, **victim, **bearer(guess(member_token))).status_code == 401
    assert client.get(url, **victim, **bearer(member_token)).status_code == 200


def test_num_proxies_counts_the_address_the_trusted_proxy_saw(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, "2/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    url = access_url(project.organization.slug, project.slug)
    proxy = {"REMOTE_ADDR": "10.0.0.1", **bearer(guess(member_token))}
    # The client may prepend anything; the proxy appends the address it saw.
    statuses = [
        client.get(url, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 203.0.113.66", **proxy).status_code
        for n in range(3)
    ]
    assert statuses == [401, 401, 429]
    # Another client behind the same proxy has its own count.
    assert client.get(url, HTTP_X_FORWARDED_FOR="203.0.113.67", **proxy).status_code == 401


def test_failures_expire_with_their_window_and_successes_do_not_count(
    settings,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    set_auth_rate(settings, "2/min")
    now = [60_000_000.0]  # the start of a minute
    monkeypatch.setattr(FailedAuthenticationThrottle, "timer", lambda self: now[0])
    url = access_url(project.organization.slug, project.slug)
    wrong = bearer(guess(member_token))
    for _ in range(10):
        assert client.get(url, **bearer(member_token)).status_code == 200
    assert client.get(url, **wrong).status_code == 401
    now[0] += 30
    assert client.get(url, **wrong).status_code == 401
    now[0] += 10
    response = client.get(url, **wrong)
    assert response.status_code == 429
    assert response["Retry-After"] == "20"  # the window's end
    now[0] += 20  # the next minute: a fresh count
    assert client.get(url, **wrong).status_code == 401


def test_concurrent_failures_are_all_counted(
    settings,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads failing at once against one shared cache lose no count.

    A read-modify-write of the address's history (get, then set) loses the
    failures recorded between the two; the forced thread switches make
    that interleaving frequent.
    """
    threads, attempts = 8, 50
    total = threads * attempts
    set_auth_rate(settings, f"{total}/day")
    monkeypatch.setattr(FailedAuthenticationThrottle, "timer", lambda self: 86_400.0 * 20_000)
    factory = RequestFactory()

    def fail_once() -> int:
        request = Request(factory.get("/", HTTP_AUTHORIZATION="Bearer", REMOTE_ADDR="192.0.2.1"))
        try:
            BearerTokenAuthentication().authenticate(request)
        except Throttled:
            return 429
        except AuthenticationFailed:
            return 401
        return 200

    barrier = threading.Barrier(threads)

    def worker() -> list[int]:
        barrier.wait()
        return [fail_once() for _ in range(attempts)]

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = [
                status
                for f in [pool.submit(worker) for _ in range(threads)]
                for status in f.result()
            ]
    finally:
        sys.setswitchinterval(previous)
    assert results.count(401) == total
    # Every one was counted, so the next is over the limit.
    assert fail_once() == 429


def test_every_429_of_the_request_throttle_has_retry_after(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
) -> None:
    url = access_url(project.organization.slug, project.slug)
    set_rate(settings, "5/min")
    for _ in range(5):
        assert client.get(url, **bearer(member_token)).status_code == 200
    # More requests on record than the new rate allows: DRF's own wait() has no answer.
    set_rate(settings, "2/min")
    response = client.get(url, **bearer(member_token))
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60


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


def reads_counts(queries: list[dict[str, str]]) -> bool:
    return any(EventCount._meta.db_table in query["sql"] for query in queries)


@pytest.mark.parametrize("credentials", ["token", "session"])
def test_a_throttled_request_reads_no_counts(
    settings,  # type: ignore[no-untyped-def]
    client: Client,
    project: Project,
    member_token: ApiToken,
    credentials: str,
) -> None:
    set_rate(settings, "2/s")
    url = reverse("project_stats:project-stats", args=[project.organization.slug, project.slug])
    if credentials == "token":
        extra = bearer(member_token)
    else:
        client.force_login(member_token.user)
        extra = {}

    def get() -> tuple[int, bool]:
        with CaptureQueriesContext(connection) as ctx:
            status = client.get(url, **extra).status_code
        return status, reads_counts(ctx.captured_queries)

    assert [get() for _ in range(2)] == [(200, True), (200, True)]
    # A token's user is known from the database only: its first refusal
    # reads what an allowed request would; the next ones read no counts.
    first = get()
    assert first[0] == 429
    assert [get() for _ in range(2)] == [(429, False), (429, False)]
    if credentials == "session":
        assert first == (429, False)
    time.sleep(2.1)  # the window and the token's mark expire
    assert get() == (200, True)
