"""The demo site as production would run it, plus the floor view's URLconf."""

from __future__ import annotations

import os

import dj_database_url

from config.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "bench.urls"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ["BENCH_DATABASE_URL"], conn_max_age=600, conn_health_checks=False
    )
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
