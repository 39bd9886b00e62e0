"""The demo site's production profile (``DJANGO_ENV=production``) passes ``check --deploy``."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECRET = secrets.token_urlsafe(50)


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    return subprocess.run(  # noqa: S603  (our own manage.py)
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def setting(name: str, **env: str) -> str:
    result = run("shell", "-c", f"from django.conf import settings; print(settings.{name})", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # after the shell's own notes


def test_production_profile_passes_the_deployment_checks() -> None:
    result = run(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=SECRET,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_development_profile_is_what_the_deployment_checks_refuse() -> None:
    result = run("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    for check in ("W004", "W008", "W009", "W012", "W016", "W018"):
        assert f"security.{check}" in result.stderr + result.stdout


def test_production_turns_debug_off_unless_asked() -> None:
    assert setting("DEBUG", DJANGO_ENV="production", DJANGO_SECRET_KEY=SECRET) == "False"
    assert setting("DEBUG") == "True"
    on = setting("DEBUG", DJANGO_ENV="production", DJANGO_SECRET_KEY=SECRET, DJANGO_DEBUG="1")
    assert on == "True"


def test_hsts_and_the_tls_proxy_are_settable() -> None:
    env = {"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": SECRET}
    assert setting("SECURE_HSTS_SECONDS", **env) == "31536000"
    assert setting("SECURE_HSTS_SECONDS", **env, DJANGO_HSTS_SECONDS="600") == "600"
    assert setting("SECURE_HSTS_PRELOAD", **env, DJANGO_HSTS_PRELOAD="0") == "False"
    proxied = setting("SECURE_PROXY_SSL_HEADER", **env, DJANGO_BEHIND_TLS_PROXY="1")
    assert proxied == "('HTTP_X_FORWARDED_PROTO', 'https')"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_ENV": "production"}, "needs DJANGO_SECRET_KEY"),
        ({"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": "short"}, "needs DJANGO_SECRET_KEY"),
        ({"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": "a" * 60}, "needs DJANGO_SECRET_KEY"),
        ({"DJANGO_ENV": "prod"}, "DJANGO_ENV must be development or production"),
        ({"DJANGO_DEBUG": "yes"}, "DJANGO_DEBUG must be 0 or 1"),
        (
            {"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": SECRET, "DJANGO_HSTS_SECONDS": "1y"},
            "DJANGO_HSTS_SECONDS must be a whole number",
        ),
    ],
)
def test_a_misconfigured_environment_stops_the_site(env: dict[str, str], message: str) -> None:
    result = run("check", **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_database_connections_persist_without_a_health_check_unless_asked() -> None:
    # One round trip per stats request; a health check would add a second.
    database = 'DATABASES["default"]'
    url = {"DATABASE_URL": "postgres://stats@db.example/stats"}
    assert setting(f"{database}['CONN_MAX_AGE']", **url) == "60"
    assert setting(f"{database}['CONN_HEALTH_CHECKS']", **url) == "False"
    checked = setting(f"{database}['CONN_HEALTH_CHECKS']", **url, CONN_HEALTH_CHECKS="1")
    assert checked == "True"
    assert setting(f"{database}['CONN_MAX_AGE']", **url, CONN_MAX_AGE="600") == "600"
