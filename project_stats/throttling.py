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

from typing import Any

from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

__all__ = [
    "AUTH_THROTTLE_SCOPE",
    "THROTTLE_SCOPE",
    "FailedAuthenticationThrottle",
    "ProjectStatsThrottle",
]

THROTTLE_SCOPE = "project_stats"
AUTH_THROTTLE_SCOPE = "project_stats_auth"


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


class FailedAuthenticationThrottle(SimpleRateThrottle):
    """Failed bearer authentications per client address, scope ``project_stats_auth``.

    Not a view throttle: DRF runs those after authentication, too late to
    stop guessing. :class:`~project_stats.authentication.BearerTokenAuthentication`
    calls :meth:`check` before looking at a token and :meth:`record_failure`
    after each failure. Once an address has failed ``rate`` times within the
    period, every bearer request from it answers 429 (with ``Retry-After``)
    until the oldest failure leaves the window, a correct token included:
    otherwise a guesser would learn when it guessed right. Only failures
    count, so clients with good tokens are never slowed. The address is
    DRF's (``REMOTE_ADDR``, or ``X-Forwarded-For`` as ``NUM_PROXIES`` says).
    Off when no rate is set.
    """

    scope = AUTH_THROTTLE_SCOPE
    detail = "Too many failed authentication attempts."

    def get_rate(self) -> str | None:
        return _configured_rate(self.scope)

    def get_cache_key(self, request: Request, view: Any = None) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def _recent(self, key: str, window: int) -> list[float]:
        """Times of the failures still inside the window, newest first."""
        return [t for t in self.cache.get(key, []) if t > self.now - window]

    def check(self, request: Request) -> None:
        """Raise ``Throttled`` if the request's address has failed too often lately."""
        self.key = None
        limit, window = self.parse_rate(self.rate)
        if limit is None or window is None:
            return
        self.key, self.window = self.get_cache_key(request), window
        self.now = self.timer()
        self.history = self._recent(self.key, window)
        if len(self.history) >= limit:
            raise Throttled(wait=self.wait(), detail=self.detail)

    def record_failure(self) -> None:
        """Count a failure of the request last passed to :meth:`check`."""
        if self.key is None:
            return
        # Read again: other workers may have recorded failures meanwhile.
        history = self._recent(self.key, self.window)
        self.cache.set(self.key, [self.now, *history], self.window)
