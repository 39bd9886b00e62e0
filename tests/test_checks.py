from __future__ import annotations

import pytest

from project_stats.checks import check_settings, check_throttle_rate


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


GOOD_BUFFER = {"URL": "redis://127.0.0.1:6379/0"}


@pytest.mark.parametrize(
    "value",
    [
        None,
        GOOD_BUFFER,
        {"URL": "rediss://cache:6380/2", "CLUSTER": True, "SHARDS": 1, "ON_ERROR": "database"},
        {"URL": "unix:///run/redis.sock", "READ_ON_ERROR": "database", "SOCKET_TIMEOUT": 0.5},
    ],
)
def test_good_buffer_settings_pass(settings, value) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": value}
    assert check_buffer() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("redis://127.0.0.1", "project_stats.E011"),
        ({}, "project_stats.E012"),
        ({"URL": "http://127.0.0.1:6379"}, "project_stats.E012"),
        ({**GOOD_BUFFER, "CLUSTER": "yes"}, "project_stats.E014"),
        ({**GOOD_BUFFER, "PREFIX": ""}, "project_stats.E015"),
        ({**GOOD_BUFFER, "PREFIX": "a{b}"}, "project_stats.E015"),
        ({**GOOD_BUFFER, "PREFIX": "a:b"}, "project_stats.E015"),
        ({**GOOD_BUFFER, "SHARDS": 0}, "project_stats.E016"),
        ({**GOOD_BUFFER, "SHARDS": True}, "project_stats.E016"),
        ({**GOOD_BUFFER, "SHARDS": 20000}, "project_stats.E016"),
        ({**GOOD_BUFFER, "ON_ERROR": "ignore"}, "project_stats.E017"),
        ({**GOOD_BUFFER, "READ_ON_ERROR": None}, "project_stats.E017"),
        ({**GOOD_BUFFER, "SOCKET_TIMEOUT": 0}, "project_stats.E018"),
        ({**GOOD_BUFFER, "LEASE_SECONDS": "60"}, "project_stats.E018"),
        ({**GOOD_BUFFER, "KEEP_APPLIED_SECONDS": -1}, "project_stats.E018"),
        ({**GOOD_BUFFER, "SHARD": 4}, "project_stats.E019"),
    ],
)
def test_bad_buffer_settings_are_reported(settings, value, expected: str) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": value}
    assert expected in [m.id for m in check_buffer()]


def test_a_missing_redis_client_names_the_extra(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    from project_stats.checks import check_buffer

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now raises ImportError
    settings.PROJECT_STATS = {"BUFFER": GOOD_BUFFER}
    errors = check_buffer()
    assert [m.id for m in errors] == ["project_stats.E013"]
    assert "django-project-stats[redis]" in (errors[0].hint or "")
