from __future__ import annotations

import pytest
from django.core.checks import ERROR
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from project_stats.checks import check_database, check_settings, check_throttle_rate


def ids(settings) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.id for m in check_settings()]


def test_defaults_pass(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {}
    assert ids(settings) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"ROLLUPS": 5}, "project_stats.E001"),
        ({"ROLLUPS": ()}, "project_stats.E001"),
        ({"ROLLUPS": ((0, 10),)}, "project_stats.E002"),
        ({"ROLLUPS": ((10, -1),)}, "project_stats.E002"),
        ({"ROLLUPS": ((3600, 10), (10, 10))}, "project_stats.E003"),
        ({"ROLLUPS": ((10, 10), (10, 20))}, "project_stats.E003"),
        ({"ROLLUPS": ((10, 10), (25, 10))}, "project_stats.E004"),
        ({"MAX_POINTS": 0}, "project_stats.E005"),
        ({"MAX_POINTS": "many"}, "project_stats.E005"),
        ({"TIMESTAMP_FORMAT": "iso"}, "project_stats.E006"),
    ],
)
def test_bad_settings_are_reported(settings, value: dict, expected: str) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = value
    assert expected in ids(settings)


def test_user_dict_is_never_mutated(settings) -> None:  # type: ignore[no-untyped-def]
    from project_stats.conf import project_stats_settings

    user = {"MAX_POINTS": 7}
    settings.PROJECT_STATS = user
    assert project_stats_settings.MAX_POINTS == 7
    assert project_stats_settings.ROLLUPS == ((10, 360), (3600, 168), (86400, 90))
    assert user == {"MAX_POINTS": 7}


@pytest.mark.parametrize("rate", ["120/min", "5/s", "1000/day", "0/hour", None])
def test_good_throttle_rates_pass(settings, rate: str | None) -> None:  # type: ignore[no-untyped-def]
    settings.REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"project_stats": rate}}
    assert check_throttle_rate() == []


def test_no_throttle_rate_passes(settings) -> None:  # type: ignore[no-untyped-def]
    settings.REST_FRAMEWORK = {}
    assert check_throttle_rate() == []


@pytest.mark.parametrize("rate", ["lots", "5", "5/week", "-1/min", "5 / min", "/min", 5, ""])
@pytest.mark.parametrize("scope", ["project_stats", "project_stats_auth"])
def test_bad_throttle_rates_are_reported(settings, rate: object, scope: str) -> None:  # type: ignore[no-untyped-def]
    settings.REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {scope: rate}}
    assert [m.id for m in check_throttle_rate()] == ["project_stats.E007"]
    assert scope in check_throttle_rate()[0].msg


def test_supported_database_passes() -> None:
    assert check_database() == []


@pytest.mark.django_db  # `check` also runs Django's model checks, which may ask the database
def test_unsupported_database_is_an_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Writes raise on any other vendor, so the site must not start quietly.
    monkeypatch.setattr(connection, "vendor", "mysql")
    messages = check_database()
    assert [(m.id, m.level) for m in messages] == [("project_stats.E008", ERROR)]
    assert "mysql" in messages[0].msg
    with pytest.raises(SystemCheckError, match="project_stats.E008"):
        call_command("check")


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Etc/GMT+5"])
def test_sqlite_database_time_zone_is_refused(monkeypatch, zone: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(connection.settings_dict, "TIME_ZONE", zone)
    found = [(m.id, m.level) for m in check_database()]
    if connection.vendor == "sqlite":
        assert found == [("project_stats.E009", ERROR)]
    else:  # PostgreSQL stores instants whatever the connection's zone
        assert found == []


@pytest.mark.parametrize("zone", [None, "UTC"])
def test_sqlite_database_time_zone_utc_passes(monkeypatch, zone: str | None) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(connection.settings_dict, "TIME_ZONE", zone)
    assert check_database() == []
