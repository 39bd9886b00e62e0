"""The test settings with a UUID-keyed, email-named user model (``AUTH_USER_MODEL``)."""

from __future__ import annotations

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.uuid_user"]
AUTH_USER_MODEL = "uuid_user.EmailUser"
