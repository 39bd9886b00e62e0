"""Settings of a ``manage.py`` process a test starts (a flusher, a health check):
the test settings on the database of ``TEST_DATABASE_URL`` (the test's own
database, or one that does not answer) with ``PROJECT_STATS`` from the JSON
of ``TEST_PROJECT_STATS``; the flusher's log on stderr."""

from __future__ import annotations

import json
import os

from .settings import *  # noqa: F403

PROJECT_STATS = json.loads(os.environ.get("TEST_PROJECT_STATS", "{}"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"project_stats.flush": {"handlers": ["stderr"], "level": "INFO"}},
}
