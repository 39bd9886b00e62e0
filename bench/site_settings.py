"""The demo site as production would run it, plus the floor view's URLconf."""

from __future__ import annotations

import os

# The demo site's own database settings (connection age, health checks) on
# the benchmark's database: the site as shipped.
os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]

from config.settings import *  # noqa: E402, F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "bench.urls"
LOGGING = {"version": 1, "disable_existing_loggers": False}
