from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import ERROR, WARNING
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from project_stats.checks import (
    _DURATIONS,
    check_buffer,
    check_database,
    check_digits_only_slugs,
    check_mysql,
    check_settings,
    check_throttle_rate,
    check_time_zone_support,
)
from project_stats.models import Organization

from .factories import OrganizationFactory, ProjectFactory


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
        ({"MAX_TOTAL_POINTS": 0}, "project_stats.E020"),
        ({"MAX_TOTAL_POINTS": "many"}, "project_stats.E020"),
        ({"MAX_TOTAL_POINTS": True}, "project_stats.E020"),
        ({"PREPARED_STATEMENTS": 0}, "project_stats.E024"),
        ({"PREPARED_STATEMENTS": "off"}, "project_stats.E024"),
        ({"FULL_SCOPE_AUTHENTICATION_CLASSES": "x.Y"}, "project_stats.E021"),
        ({"FULL_SCOPE_AUTHENTICATION_CLASSES": [3]}, "project_stats.E021"),
        ({"FULL_SCOPE_AUTHENTICATION_CLASSES": ["nowhere.Nothing"]}, "project_stats.E022"),
        (
            {"FULL_SCOPE_AUTHENTICATION_CLASSES": ["rest_framework.authentication"]},
            "project_stats.E022",
        ),
        (
            {"FULL_SCOPE_AUTHENTICATION_CLASSES": ["rest_framework.permissions.AllowAny"]},
            "project_stats.E022",
        ),
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


def test_a_listed_authentication_class_passes(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {
        "FULL_SCOPE_AUTHENTICATION_CLASSES": ("rest_framework.authentication.BasicAuthentication",)
    }
    assert ids(settings) == []


# W002: existing rows with slugs of digits only


def w002(**kwargs: object) -> list[str]:
    return [m.msg for m in check_digits_only_slugs(**kwargs) if m.id == "project_stats.W002"]


@pytest.mark.django_db
def test_rows_with_slugs_of_digits_only_are_listed() -> None:
    assert w002(databases=["default"]) == []
    # Rows saved before slugs were validated (save() does not validate).
    numbered = Organization.objects.create(slug="2024", name="2024")
    ProjectFactory(organization=numbered, slug="web")
    project = ProjectFactory(organization=OrganizationFactory(slug="acme"), slug="42")
    ProjectFactory(organization=project.organization, slug="42a")
    [organizations, projects] = w002(databases=["default"])
    assert organizations.startswith("1 organization in database 'default' with a slug of")
    assert organizations.endswith(f": 2024 (id {numbered.pk}).")
    assert projects.endswith(f": acme/42 (id {project.pk}).")
    # A data check: never part of a plain `manage.py check`.
    assert w002() == []
    assert w002(databases=None) == []


@pytest.mark.django_db
def test_the_list_is_bounded() -> None:
    Organization.objects.bulk_create(Organization(slug=str(n), name="n") for n in range(25))
    [message] = w002(databases=["default"])
    assert message.startswith("25 organizations")
    assert message.count("(id ") == 20
    assert message.endswith(" and 5 more.")


def manage(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEST_DATABASE_URL": database_url,
    }
    return subprocess.run(  # noqa: S603  (our own interpreter and arguments)
        [sys.executable, "-m", "django", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_w002_on_a_real_site_before_and_after_migrate(tmp_path: Path) -> None:
    """Before the tables exist (``migrate`` runs the checks first) there is nothing to say."""
    url = f"sqlite:///{tmp_path / 'site.sqlite3'}"
    fresh = manage(tmp_path, url, "check", "--database", "default")
    assert (fresh.returncode, fresh.stderr) == (0, "")
    migrate = manage(tmp_path, url, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    assert "W002" not in migrate.stdout + migrate.stderr
    insert = "from project_stats.models import Organization as O; O.objects.create(slug='7')"
    assert manage(tmp_path, url, "shell", "-c", insert).returncode == 0
    checked = manage(tmp_path, url, "check", "--database", "default")
    assert checked.returncode == 0  # a warning
    assert "project_stats.W002" in checked.stderr and ": 7 (id 1)." in checked.stderr
    assert "W002" not in manage(tmp_path, url, "check").stderr


def test_w002_is_silent_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # Nothing listens on port 9 of the loopback address: the connection is refused.
    result = manage(
        tmp_path, "postgres://postgres@127.0.0.1:9/nothing", "check", "--database", "default"
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_time_zone_support_is_required(settings) -> None:  # type: ignore[no-untyped-def]

    assert check_time_zone_support() == []
    settings.USE_TZ = False
    assert [m.id for m in check_time_zone_support()] == ["project_stats.E010"]


def test_supported_database_passes() -> None:
    assert check_database() == []


@pytest.mark.django_db  # `check` also runs Django's model checks, which may ask the database
def test_unsupported_database_is_an_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Writes raise on any other vendor, so the site must not start quietly.
    monkeypatch.setattr(connection, "vendor", "oracle")
    messages = check_database()
    assert [(m.id, m.level) for m in messages] == [("project_stats.E008", ERROR)]
    assert "oracle" in messages[0].msg
    # Routing our tables to another database is no way out: they refer to the user model.
    assert "user model" in (messages[0].hint or "")
    assert "Route" not in (messages[0].hint or "")
    with pytest.raises(SystemCheckError, match="project_stats.E008"):
        call_command("check")


def _as_mysql(monkeypatch, *, mariadb: bool, version: tuple[int, ...], sql_mode: set[str]) -> None:  # type: ignore[no-untyped-def]
    """The default connection as MariaDB or MySQL describes itself to Django."""
    monkeypatch.setattr(connection, "vendor", "mysql")
    monkeypatch.setattr(connection, "mysql_is_mariadb", mariadb, raising=False)
    monkeypatch.setattr(connection, "mysql_version", version, raising=False)
    monkeypatch.setattr(connection, "sql_mode", sql_mode, raising=False)


@pytest.mark.parametrize(
    ("mariadb", "version", "sql_mode", "expected"),
    [
        (True, (10, 6, 0), {"STRICT_TRANS_TABLES"}, []),
        (True, (11, 4, 2), {"STRICT_ALL_TABLES", "NO_ZERO_DATE"}, []),
        (True, (10, 5, 24), {"STRICT_TRANS_TABLES"}, [("project_stats.E040", ERROR)]),
        (False, (8, 0, 18), {"STRICT_TRANS_TABLES"}, [("project_stats.E041", ERROR)]),
        (False, (5, 7, 44), {"STRICT_TRANS_TABLES"}, [("project_stats.E041", ERROR)]),
        (False, (8, 0, 19), {"STRICT_TRANS_TABLES"}, [("project_stats.W010", WARNING)]),
        (True, (10, 11, 9), {"NO_ENGINE_SUBSTITUTION"}, [("project_stats.E042", ERROR)]),
        (True, (10, 11, 9), set(), [("project_stats.E042", ERROR)]),
    ],
)
def test_mariadb_and_mysql_versions_and_sql_mode(  # type: ignore[no-untyped-def]
    monkeypatch, mariadb: bool, version: tuple[int, ...], sql_mode: set[str], expected: list
) -> None:
    _as_mysql(monkeypatch, mariadb=mariadb, version=version, sql_mode=sql_mode)
    # MariaDB and MySQL are supported vendors: E008 no more.
    assert check_database() == []
    messages = check_mysql(databases=["default"])
    assert [(m.id, m.level) for m in messages] == expected
    assert all(m.hint for m in messages)
    # A database check: it connects, so it runs only for the databases asked about.
    assert check_mysql(databases=None) == []


def test_a_non_strict_sql_mode_names_the_fix(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _as_mysql(monkeypatch, mariadb=True, version=(10, 11, 9), sql_mode={"ANSI_QUOTES"})
    [message] = check_mysql(databases=["default"])
    assert "STRICT_TRANS_TABLES" in (message.hint or "")


@pytest.mark.django_db
def test_the_test_database_passes_the_database_checks() -> None:
    # On MariaDB (TEST_DATABASE_URL=mysql://...) this asks the real server.
    assert check_mysql(databases=["default"]) == []
    call_command("check", databases=["default"])


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


@pytest.mark.parametrize("prepared", [True, False])
def test_a_transaction_pooler_with_prepared_statements_is_a_warning(  # type: ignore[no-untyped-def]
    settings, monkeypatch, prepared: bool
) -> None:
    # DISABLE_SERVER_SIDE_CURSORS is Django's own advice for PgBouncer in transaction mode.
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    monkeypatch.setattr(connection, "vendor", "postgresql")
    settings.PROJECT_STATS = {"PREPARED_STATEMENTS": prepared}
    found = [(m.id, m.level) for m in check_database()]
    assert found == ([("project_stats.W003", WARNING)] if prepared else [])


GOOD_BUFFER = {"URL": "redis://127.0.0.1:6379/0"}


@pytest.mark.parametrize(
    "value",
    [
        None,
        GOOD_BUFFER,
        {"URL": "rediss://cache:6380/2", "CLUSTER": True, "SHARDS": 1, "ON_ERROR": "database"},
        {"URL": "unix:///run/redis.sock", "READ_ON_ERROR": "database", "SOCKET_TIMEOUT": 0.5},
        {**GOOD_BUFFER, "ACCEPT_EVICTION": True},
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
        ({**GOOD_BUFFER, "ACCEPT_EVICTION": 1}, "project_stats.E014"),
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


SENTINELS = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3"


@pytest.mark.parametrize(
    "url",
    [
        f"{SENTINELS}/mymaster",
        f"{SENTINELS}/mymaster/3",
        "redis+sentinel://:s%40cret@[::1]:26380,sentinel.local/mymaster/0",
        f"{SENTINELS}/mymaster/0?sentinel_password=x&sentinel_username=watch",
    ],
)
def test_sentinel_urls_pass(settings, url: str) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {"URL": url}}
    assert check_buffer() == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"URL": SENTINELS}, "names no service"),
        ({"URL": f"{SENTINELS}/"}, "names no service"),
        ({"URL": f"{SENTINELS}/mymaster/zero"}, "must be a database number"),
        ({"URL": f"{SENTINELS}/mymaster/0/1"}, "must be a database number"),
        ({"URL": "redis+sentinel://10.0.0.1:port/mymaster"}, "'10.0.0.1:port' is not"),
        ({"URL": "redis+sentinel://10.0.0.1,/mymaster"}, "'' is not a sentinel"),
        ({"URL": "redis+sentinel://[::1/mymaster"}, "'[::1' is not"),
        ({"URL": f"{SENTINELS}/mymaster?password=x"}, "unknown options password"),
        ({"URL": f"{SENTINELS}/mymaster", "CLUSTER": True}, "not a Redis Cluster"),
    ],
)
def test_bad_sentinel_urls_are_reported(settings, value: dict, problem: str) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": value}
    (error,) = check_buffer()
    assert error.id == "project_stats.E028"
    assert problem in error.msg
    assert "redis+sentinel://" in error.hint


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"WAIT_REPLICAS": -1}, "project_stats.E029"),
        ({"WAIT_REPLICAS": "1"}, "project_stats.E029"),
        ({"WAIT_REPLICAS": True}, "project_stats.E029"),
        ({"WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 2.0}, "project_stats.E029"),  # SOCKET_TIMEOUT 2.0
        ({"WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 0}, "project_stats.E018"),
        ({"WAIT_TIMEOUT": "1s"}, "project_stats.E018"),
    ],
)
def test_bad_wait_settings_are_reported(settings, value: dict, expected: str) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, **value}}
    assert [m.id for m in check_buffer()] == [expected]


@pytest.mark.parametrize(
    "value",
    [
        {"WAIT_REPLICAS": 0, "WAIT_TIMEOUT": 5.0},  # not waiting: the timeout is unused
        {"WAIT_REPLICAS": 2, "WAIT_TIMEOUT": 0.5},
        {"WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 4.0, "SOCKET_TIMEOUT": 5.0},
    ],
)
def test_good_wait_settings_pass(settings, value: dict) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, **value}}
    assert check_buffer() == []


def test_a_sentinel_url_parts() -> None:
    from project_stats.tsdb.buffer import SentinelAddress, sentinel_address

    url = "redis+sentinel://app:s%40cret@h1,[::1]:26380/my%20master/2?sentinel_password=w"
    assert sentinel_address(url) == SentinelAddress(
        sentinels=(("h1", 26379), ("::1", 26380)),
        service="my master",
        db=2,
        username="app",
        password="s@cret",
        sentinel_username=None,
        sentinel_password="w",
    )


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        # Each of these passed the check and then failed at run time.
        ("LEASE_SECONDS", 0.0001, "from 1 to 86400 seconds"),  # PX 0: Redis refuses it
        ("LEASE_SECONDS", float("inf"), "finite"),  # OverflowError in the flush
        ("KEEP_APPLIED_SECONDS", float("inf"), "finite"),  # OverflowError in the prune
        ("SOCKET_TIMEOUT", float("inf"), "finite"),  # OverflowError in the socket
        ("LEASE_SECONDS", float("nan"), "finite"),
        ("LEASE_SECONDS", 0.999, "from 1 to 86400 seconds"),
        ("LEASE_SECONDS", 86401, "from 1 to 86400 seconds"),
        ("KEEP_APPLIED_SECONDS", 60, "from 3600 to 3155760000 seconds"),
        ("KEEP_APPLIED_SECONDS", 10**12, "from 3600 to 3155760000 seconds"),
        ("SOCKET_TIMEOUT", 10**10, "more than 0 and at most 3600 seconds"),
        ("SOCKET_TIMEOUT", -1.0, "more than 0 and at most 3600 seconds"),
        ("SOCKET_TIMEOUT", True, "a number of seconds"),
        ("KEEP_APPLIED_SECONDS", "7d", "a number of seconds"),
    ],
)
def test_buffer_durations_must_be_finite_and_within_bounds(  # type: ignore[no-untyped-def]
    settings, name: str, value: object, problem: str
) -> None:
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, name: value}}
    [error] = check_buffer()
    assert error.id == "project_stats.E018"
    assert error.msg.startswith(f"PROJECT_STATS['BUFFER']['{name}'] must be")
    assert problem in error.msg
    assert repr(value) in error.msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEASE_SECONDS", 1),
        ("LEASE_SECONDS", 86400.0),
        ("KEEP_APPLIED_SECONDS", 3600),
        ("KEEP_APPLIED_SECONDS", 3155760000),
        ("SOCKET_TIMEOUT", 0.01),
        ("SOCKET_TIMEOUT", 3600),
    ],
)
def test_buffer_durations_at_their_bounds_pass(settings, name: str, value: float) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, name: value}}
    assert check_buffer() == []


@pytest.mark.django_db
def test_the_buffer_works_with_durations_at_their_bounds(settings, buffer, now) -> None:  # type: ignore[no-untyped-def]
    # The bounds are the run time's: every value the check lets through works.
    from project_stats import tsdb

    project = ProjectFactory()
    for name in ("LEASE_SECONDS", "KEEP_APPLIED_SECONDS", "SOCKET_TIMEOUT"):
        least, most, _ = _DURATIONS[name]
        for value in (least or 0.01, most):
            settings.PROJECT_STATS = {"BUFFER": {**buffer, name: value}}
            assert check_buffer() == []
            tsdb.incr(project, "received", timestamp=now)
            assert tsdb.flush().batches == 1
            assert tsdb.prune_applied_batches(now=now, dry_run=True) == 0
    [(_, total)] = tsdb.get_range(project, "received", now, now, rollup=10)
    assert total == 6


@pytest.mark.parametrize("name", ["FLUSH_MAX_ROWS", "CLAIM_SHARDS"])
@pytest.mark.parametrize("value", [0, -5, 1.5, True, "50000", None])
def test_flush_max_rows_must_be_a_positive_integer(settings, value: object, name: str) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, name: value}}
    [error] = check_buffer()
    assert error.id == "project_stats.E023"
    assert repr(value) in error.msg and name in error.msg


def test_flush_max_rows_has_a_default_and_takes_any_positive_integer(settings) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer
    from project_stats.conf import project_stats_settings

    settings.PROJECT_STATS = {"BUFFER": GOOD_BUFFER}
    assert project_stats_settings.BUFFER is not None
    assert project_stats_settings.BUFFER["FLUSH_MAX_ROWS"] == 50_000
    for value in (1, 10**9):
        settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, "FLUSH_MAX_ROWS": value}}
        assert check_buffer() == []


def test_a_missing_redis_client_names_the_extra(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    from project_stats.checks import check_buffer

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now raises ImportError
    settings.PROJECT_STATS = {"BUFFER": GOOD_BUFFER}
    errors = check_buffer()
    assert [m.id for m in errors] == ["project_stats.E013"]
    assert "django-project-stats[redis]" in (errors[0].hint or "")


@pytest.mark.parametrize("value", [[5], (10, 7200), "10", 10, [True]])
def test_redis_only_rollups_must_be_configured_rollups(settings, value: object) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, "REDIS_ONLY_ROLLUPS": value}}
    [error] = check_buffer()
    assert error.id == "project_stats.E025" and repr(value) in error.msg


@pytest.mark.parametrize("value", [None, (), [10], (10, 3600)])
def test_redis_only_rollups_accepts_none_or_configured_rollups(settings, value: object) -> None:  # type: ignore[no-untyped-def]
    from project_stats.checks import check_buffer

    settings.PROJECT_STATS = {"BUFFER": {**GOOD_BUFFER, "REDIS_ONLY_ROLLUPS": value}}
    assert check_buffer() == []
