"""The test settings with a multi-table-inheritance user model (``AUTH_USER_MODEL``)."""

from __future__ import annotations

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.mti_user"]
AUTH_USER_MODEL = "mti_user.Customer"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
