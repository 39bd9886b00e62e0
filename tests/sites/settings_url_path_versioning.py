"""DRF's ``URLPathVersioning``: the API included under ``api/<version>/``."""

from tests.settings import *  # noqa: F403
from tests.settings import REST_FRAMEWORK

ROOT_URLCONF = "tests.sites.urls_url_path_versioning"
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.URLPathVersioning",
    "ALLOWED_VERSIONS": ["0", "1"],
    "DEFAULT_VERSION": "0",
}
