"""A site with ``USE_TZ = False``: refused by the system check ``project_stats.E010``."""

from tests.settings import *  # noqa: F403

USE_TZ = False
