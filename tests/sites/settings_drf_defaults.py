"""A site with its own REST_FRAMEWORK defaults, none of them the API's.

Its own ``EXCEPTION_HANDLER`` is left out on purpose: the API hands the
errors it does not translate to a site's handler (``tests/test_exceptions.py``),
so such a site chooses the shape of those errors itself.
"""

from tests.settings import *  # noqa: F403
from tests.settings import REST_FRAMEWORK

REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.BasicAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "tests.sites.drf.SitePagination",
    "PAGE_SIZE": 1,
    "DEFAULT_FILTER_BACKENDS": ["rest_framework.filters.OrderingFilter"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": "1/day"},
    "DEFAULT_METADATA_CLASS": None,
    "DATETIME_FORMAT": "%d/%m/%Y",
    "NON_FIELD_ERRORS_KEY": "__all__",
}
