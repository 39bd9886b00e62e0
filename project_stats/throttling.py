"""Optional per-user rate limiting of the API.

Off unless the site sets a rate::

    REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"project_stats": "120/min"}}
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

__all__ = ["THROTTLE_SCOPE", "ProjectStatsThrottle"]

THROTTLE_SCOPE = "project_stats"


class ProjectStatsThrottle(UserRateThrottle):
    """Per user (per client address when anonymous), scope ``project_stats``.

    DRF copies ``DEFAULT_THROTTLE_RATES`` onto the throttle class when it is
    imported and raises ``ImproperlyConfigured`` for a missing scope; this
    one reads the rate on every request (DRF's ``api_settings`` follows
    ``override_settings``) and lets everything through when there is none.
    """

    scope = THROTTLE_SCOPE

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        rate = rates.get(self.scope)
        return rate if isinstance(rate, str) and rate else None
