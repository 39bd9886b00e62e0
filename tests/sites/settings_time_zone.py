"""A site whose ``TIME_ZONE`` is not UTC, and half an hour off the hour at that."""

from tests.settings import *  # noqa: F403

TIME_ZONE = "Asia/Kolkata"
