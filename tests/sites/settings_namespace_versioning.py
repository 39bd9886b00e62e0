"""DRF's ``NamespaceVersioning``: the API included once per version namespace."""

from tests.settings import *  # noqa: F403
from tests.settings import REST_FRAMEWORK

ROOT_URLCONF = "tests.sites.urls_namespace_versioning"
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.NamespaceVersioning",
    "ALLOWED_VERSIONS": ["0", "1"],
    "DEFAULT_VERSION": "0",
}
