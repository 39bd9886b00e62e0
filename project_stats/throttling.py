"""Optional rate limiting of the API: requests per user, failed authentications per address.

Both are off unless the site sets a rate::

    REST_FRAMEWORK = {
        "DEFAULT_THROTTLE_RATES": {
            "project_stats": "120/min",  # requests per user
            "project_stats_auth": "10/min",  # failed bearer authentications per address
        }
    }
"""

from __future__ import annotations

import math
from typing import Any

from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle, UserRateThrottle

__all__ = [
    "AUTH_THROTTLE_SCOPE",
    "THROTTLE_SCOPE",
    "FailedAuthenticationThrottle",
    "ProjectStatsThrottle",
    "client_address",
]

THROTTLE_SCOPE = "project_stats"
AUTH_THROTTLE_SCOPE = "project_stats_auth"


def client_address(request: Request) -> str:
    """The address a request came from, as far as the site can vouch for it.

    ``REMOTE_ADDR``, unless the site declares its trusted proxies with
    ``REST_FRAMEWORK["NUM_PROXIES"]``: then DRF's reading of
    ``X-Forwarded-For`` (the address that many hops from the right). DRF
    itself believes the whole header when ``NUM_PROXIES`` is unset, which
    lets any client pick the address it is counted under.
    """
    if api_settings.NUM_PROXIES is None:
        address = request.META.get("REMOTE_ADDR")
        return address if isinstance(address, str) else ""
    return BaseThrottle().get_ident(request)


def _configured_rate(scope: str) -> str | None:
    rates = api_settings.DEFAULT_THROTTLE_RATES or {}
    rate = rates.get(scope) if isinstance(rates, dict) else None
    return rate if isinstance(rate, str) and rate else None


class ProjectStatsThrottle(UserRateThrottle):
    """Per user (per client address when anonymous), scope ``project_stats``.

    DRF copies ``DEFAULT_THROTTLE_RATES`` onto the throttle class when it is
    imported and raises ``ImproperlyConfigured`` for a missing scope; this
    one reads the rate on every request (DRF's ``api_settings`` follows
    ``override_settings``) and lets everything through when there is none.
    """

    scope = THROTTLE_SCOPE

    def get_rate(self) -> str | None:
        return _configured_rate(self.scope)

    def get_ident(self, request: Request) -> str:
        return client_address(request)

    def refuses(self, request: Request) -> bool:
        """Whether :meth:`allow_request` would refuse ``request`` now; records nothing.

        Asked before the request's counts are read, so a refused request
        costs no read of them.
        """
        if self.rate is None:
            return False
        key = self.get_cache_key(request, None)  # type: ignore[arg-type]  # unused by DRF's
        if key is None:
            return False
        duration: int = getattr(self, "duration", 0)
        limit: int = getattr(self, "num_requests", 0)
        now = self.timer()
        history = [moment for moment in self.cache.get(key, []) if moment > now - duration]
        return len(history) >= limit

    @classmethod
    def token_refused(cls, digest: str) -> bool:
        """Whether a request with the token of ``digest`` was refused within its wait.

        The user behind a bearer token is known only from the database;
        this marker, set when one of the token's requests is refused, tells
        before that.
        """
        return bool(cls.cache.get(cls._token_key(digest)))

    @classmethod
    def remember_refusal(cls, digest: str, wait: float) -> None:
        """Mark the token of ``digest`` refused for ``wait`` seconds."""
        cls.cache.set(cls._token_key(digest), 1, max(1, math.ceil(wait)))

    @classmethod
    def _token_key(cls, digest: str) -> str:
        return f"throttle_{cls.scope}_token_{digest}"

    def wait(self) -> float:
        """Seconds until a request is allowed again, never less than one.

        DRF's answers ``None`` when the history holds more requests than
        the rate allows (the rate was lowered, or workers raced), and its
        429 then goes out without ``Retry-After``.
        """
        duration: int = getattr(self, "duration", None) or 0
        limit: int = getattr(self, "num_requests", None) or 0
        # One more request fits once all but (rate - 1) of the history has
        # left the window; the history is newest first.
        index = max(limit - 1, 0)
        if len(self.history) > index:
            remaining = self.history[index] + duration - self.now
        else:
            remaining = duration
        return float(max(1, math.ceil(remaining)))


class FailedAuthenticationThrottle(SimpleRateThrottle):
    """Failed bearer authentications per client address, scope ``project_stats_auth``.

    Not a view throttle: DRF runs those after authentication, too late.
    :class:`~project_stats.authentication.BearerTokenAuthentication` calls
    :meth:`record_failure` after each failed attempt, which answers 429
    (with ``Retry-After``) instead of 401 once the address has failed more
    than ``rate`` times in the current window. A valid token is never
    refused: with 256-bit secrets guessing is hopeless, and refusing good
    tokens would let anyone who can send from (or claim) an address lock
    its users out. The throttle slows scanners and keeps logs quiet.

    Failures are counted in fixed windows of the rate's period (aligned to
    the epoch), one cache key per address and window, with ``cache.add``
    then ``cache.incr``: no read-modify-write, so concurrent failures are
    all counted where the cache's ``incr`` is atomic (Redis, Memcached,
    ``LocMemCache`` within one process). At a window's edge an address may
    fail up to twice the rate in a short time. The address is
    :func:`client_address`. Off when no rate is set.
    """

    scope = AUTH_THROTTLE_SCOPE
    detail = "Too many failed authentication attempts."
    cache_format = "throttle_%(scope)s_%(ident)s_%(window)d"

    def get_rate(self) -> str | None:
        return _configured_rate(self.scope)

    def get_cache_key(self, request: Request, view: Any = None) -> str:
        window = int(self.now // self.duration) if self.duration else 0
        return self.cache_format % {
            "scope": self.scope,
            "ident": client_address(request),
            "window": window,
        }

    def _count(self, key: str) -> int:
        """Add one failure to ``key``'s window; returns the window's count so far."""
        # add() creates the counter only if it is missing; incr() is the
        # backend's atomic increment. Should the key expire in between (a
        # cache evicting it), the next add() starts it again at one.
        self.cache.add(key, 0, self.duration)
        try:
            return int(self.cache.incr(key))
        except ValueError:
            if self.cache.add(key, 1, self.duration):
                return 1
            return int(self.cache.incr(key))

    def record_failure(self, request: Request) -> None:
        """Count a failed attempt of ``request``; raise ``Throttled`` past the rate."""
        limit, self.duration = self.parse_rate(self.rate)
        if limit is None or self.duration is None:
            return
        self.now = self.timer()
        if self._count(self.get_cache_key(request)) > limit:
            window_end = (self.now // self.duration + 1) * self.duration
            raise Throttled(wait=max(1, math.ceil(window_end - self.now)), detail=self.detail)
