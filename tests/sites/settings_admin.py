"""The admin on a site with its own user model (no ``username``) and its own admin sites.

See ``userapp/admin.py`` for the three admin sites.
"""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.sites.userapp"]
AUTH_USER_MODEL = "site_users.EmailUser"
ROOT_URLCONF = "tests.sites.urls_admin"
