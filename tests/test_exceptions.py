"""A database that goes away answers 503 with a JSON detail, and the next request recovers.

Any other error is a 500 through Django's error reporting, after the site's
own DRF exception handler had its say.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
import psycopg
import psycopg.errors as pg
import pytest
from django.core import mail
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception
from django.db import DatabaseError, OperationalError, connection
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from project_stats.exceptions import (
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_SECONDS,
    exception_handler,
    is_unavailable,
)
from project_stats.models import ApiToken, EventCount, Project
from project_stats.serializers import InvalidQuery

from .conftest import bearer
from .db_errors import BROKEN, OPEN, as_django, lost_connection, sqlite_locked
from .http import http_get
from .tcp_proxy import TcpProxy

UNAVAILABLE = {"detail": DATABASE_UNAVAILABLE}
# psycopg's own messages (its errors without SQLSTATE).
TOO_MANY_PARAMETERS = (
    "sending query and params failed: number of parameters must be between 0 and 65535"
)
SERVER_CLOSED = "consuming input failed: server closed the connection unexpectedly"


def stats_path(project: Project) -> str:
    return reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": project.organization.slug,
            "project_id_or_slug": project.slug,
        },
    )


def assert_503(status: int, headers: Any, body: bytes) -> None:
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == UNAVAILABLE
    assert headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


def interface_error() -> Exception:
    return as_django(psycopg.InterfaceError("the cursor is closed"))


def no_such_table() -> Exception:
    try:
        sqlite3.connect(":memory:").execute("SELECT * FROM nowhere")
    except sqlite3.OperationalError as error:
        return as_django(error)
    raise AssertionError  # pragma: no cover


@pytest.mark.parametrize(
    ("make", "unavailable"),
    [
        # A connection refused or lost: the driver's own errors, or the server's.
        (lambda tmp: lost_connection(), True),
        (lambda tmp: as_django(pg.AdminShutdown("terminating connection")), True),
        (lambda tmp: as_django(pg.CannotConnectNow("the database system is starting up")), True),
        (lambda tmp: as_django(pg.TooManyConnections("sorry, too many clients already")), True),
        (lambda tmp: as_django(pg.ConnectionFailure("connection failure")), True),
        # The driver's own errors (no SQLSTATE) on a connection lost under the statement.
        (lambda tmp: as_django(psycopg.OperationalError(SERVER_CLOSED), BROKEN), True),
        (lambda tmp: as_django(psycopg.OperationalError("the connection is closed"), BROKEN), True),
        # The driver refusing a statement we built wrongly: the connection is fine.
        (lambda tmp: as_django(psycopg.OperationalError(TOO_MANY_PARAMETERS), OPEN), False),
        # Everything else is a fault someone must look at.
        (lambda tmp: as_django(pg.QueryCanceled("canceling statement due to timeout")), False),
        (lambda tmp: as_django(pg.LockNotAvailable("could not obtain lock")), False),
        (lambda tmp: as_django(pg.DeadlockDetected("deadlock detected")), False),
        (lambda tmp: as_django(pg.UndefinedTable('relation "x" does not exist')), False),
        (lambda tmp: as_django(pg.DiskFull("could not extend file")), False),
        (lambda tmp: interface_error(), False),
        (lambda tmp: no_such_table(), False),
        (lambda tmp: as_django(sqlite_locked(tmp)), False),
        (lambda tmp: OperationalError("no driver error behind it"), False),
        (lambda tmp: RuntimeError("a bug"), False),
    ],
)
def test_only_a_refused_or_lost_connection_is_unavailable(
    tmp_path: Path, make: Callable[[Path], Exception], unavailable: bool
) -> None:
    assert is_unavailable(make(tmp_path)) is unavailable


def test_the_handler_answers_an_unavailable_database_with_503() -> None:
    response = exception_handler(lost_connection(), {})
    assert response is not None
    assert response.status_code == 503
    assert response.data == UNAVAILABLE
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_the_handler_leaves_other_errors_to_drf_and_django() -> None:
    assert exception_handler(RuntimeError("bug"), {}) is None
    assert exception_handler(as_django(pg.QueryCanceled("timeout")), {}) is None


@pytest.mark.django_db
def test_a_lost_connection_answers_503_on_every_endpoint_then_recovers(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    def fail(*args: Any) -> Any:
        raise lost_connection()

    paths = [
        stats_path(project),
        reverse("project_stats:organization-stats", args=[project.organization.slug]),
        reverse("project_stats:organization-projects", args=[project.organization.slug]),
    ]
    for path in paths:
        with connection.execute_wrapper(fail):
            response = client.get(path, **bearer(member_token))
        assert_503(response.status_code, response, response.content)
        assert client.get(path, **bearer(member_token)).status_code == 200


# Everything else: a 500 through Django's error reporting.


@pytest.fixture
def reported(settings, caplog: pytest.LogCaptureFixture) -> Iterator[list[BaseException]]:  # type: ignore[no-untyped-def]
    """The exceptions Django's ``got_request_exception`` announced; ``ADMINS`` set."""
    settings.ADMINS = (
        ["ops@example.com"] if django.VERSION >= (6,) else [("Ops", "ops@example.com")]
    )
    received: list[BaseException] = []

    def receiver(sender: Any, request: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        assert error is not None
        received.append(error)

    got_request_exception.connect(receiver)
    caplog.set_level(logging.ERROR, logger="django.request")
    yield received
    got_request_exception.disconnect(receiver)


def assert_reported_500(
    response: Any, reported: list[BaseException], caplog: pytest.LogCaptureFixture
) -> BaseException:
    """A 500 that Django reported: the signal, the traceback logged, the mail to ADMINS."""
    assert response.status_code == 500
    [error] = reported
    # Django logs (and mails) every 5xx; only this one has a traceback.
    [record] = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is error
    [mail_message] = [m for m in mail.outbox if "Internal Server Error" in m.subject]
    assert mail_message.to == ["ops@example.com"]
    assert "Traceback" in mail_message.body and str(error) in mail_message.body
    return error


@pytest.mark.transactional_ddl
@pytest.mark.django_db
def test_a_missing_table_is_a_500_that_reaches_error_reporting(
    client: Client,
    project: Project,
    member_token: ApiToken,
    reported: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As on a site whose migrations were not run (rolled back with the test).
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {connection.ops.quote_name(EventCount._meta.db_table)}")
    client.raise_request_exception = False
    response = client.get(stats_path(project), **bearer(member_token))
    error = assert_reported_500(response, reported, caplog)
    assert isinstance(error, DatabaseError)
    assert EventCount._meta.db_table in str(error)


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_statement_timeout_is_a_500_that_reaches_error_reporting(
    client: Client,
    project: Project,
    member_token: ApiToken,
    reported: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '200ms'")
    client.raise_request_exception = False
    # The counts are locked by another connection: the read waits, then times out.
    with table_locked(EventCount._meta.db_table):
        response = client.get(stats_path(project), **bearer(member_token))
    error = assert_reported_500(response, reported, caplog)
    assert isinstance(error, OperationalError)
    assert isinstance(error.__cause__, pg.QueryCanceled)


# More parameters than the driver binds: PostgreSQL's protocol carries 65,535,
# SQLite's default build 32,766 (Debian's allows 250,000: lowered to that here).
TOO_MANY = 70_000


@pytest.fixture
def sqlite_default_variables() -> Iterator[None]:
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    before = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)
    yield
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)


@pytest.mark.django_db
def test_a_statement_with_too_many_parameters_is_a_500_that_reaches_error_reporting(
    client: Client,
    project: Project,
    member_token: ApiToken,
    reported: list[BaseException],
    caplog: pytest.LogCaptureFixture,
    sqlite_default_variables: None,
) -> None:
    """Our bug, not an unavailable database: no 503, no Retry-After, a traceback."""
    if connection.vendor == "mysql":
        pytest.skip("mysqlclient interpolates parameters into the text: there is no limit")
    marks = ", ".join(["%s"] * TOO_MANY)

    def too_many_parameters(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        # The request's first statement, built as a list of 70,000 ids once was.
        return execute(f"SELECT 1 WHERE 1 IN ({marks})", list(range(TOO_MANY)), many, context)

    client.raise_request_exception = False
    with connection.execute_wrapper(too_many_parameters):
        response = client.get(stats_path(project), **bearer(member_token))
    error = assert_reported_500(response, reported, caplog)
    assert not response.has_header("Retry-After")
    assert isinstance(error, OperationalError)
    assert not is_unavailable(error)
    if connection.vendor == "postgresql":
        assert isinstance(error.__cause__, psycopg.OperationalError)
        assert error.__cause__.sqlstate is None  # the driver's own, as a lost connection's
        assert "65535" in str(error)
    # The connection was fine all along: the next request is answered.
    assert client.get(stats_path(project), **bearer(member_token)).status_code == 200


# The site's own exception handler.

site_handler_calls: list[Exception] = []


def recording_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """A site's handler with its own error format."""
    site_handler_calls.append(exc)
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = {"error": response.data["detail"]}
    return response


def wrapping_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """A site's handler that calls ours first, for its own views."""
    site_handler_calls.append(exc)
    response = exception_handler(exc, context)
    if response is not None:
        response["X-Site-Handler"] = "yes"
    return response


@pytest.fixture
def site_handler(settings) -> Callable[[str], None]:  # type: ignore[no-untyped-def]
    site_handler_calls.clear()

    def use(name: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "EXCEPTION_HANDLER": f"{__name__}.{name}",
        }

    return use


@pytest.mark.django_db
def test_the_sites_exception_handler_answers_what_the_package_does_not_translate(
    client: Client,
    project: Project,
    member_token: ApiToken,
    site_handler: Callable[[str], None],
    reported: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    site_handler("recording_handler")
    path = stats_path(project)
    response = client.get(path + "?stat=nope", **bearer(member_token))
    assert (response.status_code, response.json()) == (400, {"error": "Invalid stat: nope"})
    assert [type(e) for e in site_handler_calls] == [InvalidQuery]
    # The 503 is the package's own answer.
    with connection.execute_wrapper(lambda *args: (_ for _ in ()).throw(lost_connection())):
        response = client.get(path, **bearer(member_token))
    assert_503(response.status_code, response, response.content)
    assert len(site_handler_calls) == 1
    # What neither answers is Django's 500, reported.
    with connection.execute_wrapper(lambda *args: (_ for _ in ()).throw(no_such_table())):
        client.raise_request_exception = False
        response = client.get(path, **bearer(member_token))
    assert_reported_500(response, reported, caplog)
    assert site_handler_calls[-1] is reported[0]


@pytest.mark.django_db
def test_a_site_handler_that_calls_ours_does_not_loop(
    client: Client, project: Project, member_token: ApiToken, site_handler: Callable[[str], None]
) -> None:
    site_handler("wrapping_handler")
    path = stats_path(project)
    response = client.get(path + "?stat=nope", **bearer(member_token))
    assert response.status_code == 400 and response["X-Site-Handler"] == "yes"
    with connection.execute_wrapper(lambda *args: (_ for _ in ()).throw(lost_connection())):
        response = client.get(path, **bearer(member_token))
    assert_503(response.status_code, response, response.content)
    assert len(site_handler_calls) == 1  # the package answered alone


# PostgreSQL: real connections, terminated by the server.


def connect_as_tests_do() -> Any:
    """A new psycopg connection to the test database, outside Django."""
    import psycopg

    settings = connection.settings_dict
    params = {
        "dbname": settings["NAME"],
        "user": settings["USER"],
        "password": settings["PASSWORD"],
        "host": settings["HOST"],
        "port": settings["PORT"],
    }
    return psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s")


@contextmanager
def table_locked(table: str) -> Iterator[None]:
    """Hold an exclusive lock on ``table`` from another connection: readers wait."""
    locker = connect_as_tests_do()
    try:
        with locker.transaction():
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            yield
    finally:
        locker.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_terminated_mid_request_answers_503_and_the_next_succeeds(
    live_server: Any, project: Project, member_token: ApiToken
) -> None:
    url = live_server.url + stats_path(project)
    headers = {"Authorization": f"Bearer {member_token.plaintext}"}  # type: ignore[attr-defined]
    monitor = connect_as_tests_do()
    try:
        with table_locked(ApiToken._meta.db_table), ThreadPoolExecutor(1) as pool:
            # The request's first query (the token lookup) waits for the lock;
            # its server process is then terminated under it.
            pending = pool.submit(http_get, url, headers)
            waiting = wait_for(
                lambda: monitor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchall()
            )
            assert len(waiting) == 1
            monitor.execute("SELECT pg_terminate_backend(%s)", [waiting[0][0]])
            response = pending.result(timeout=30)
    finally:
        monitor.close()
    assert_503(response.status, response.headers, response.body)
    assert http_get(url, headers).status == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_persistent_connection_terminated_between_requests_fails_once_then_reconnects(
    monkeypatch: pytest.MonkeyPatch, project: Project, member_token: ApiToken
) -> None:
    # As a production server runs: Django's own WSGI handler (its request
    # signals close a broken connection) with persistent connections.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", None)
    connection.close()
    app = WSGIHandler()
    environ = RequestFactory().get(stats_path(project), **bearer(member_token)).environ

    def get() -> tuple[int, dict[str, str], bytes]:
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
            started.update(status=int(status.split()[0]), headers=dict(headers))

        result = app(dict(environ), start_response)
        try:
            body = b"".join(result)
        finally:
            result.close()  # request_finished: Django drops a connection that errored
        return started["status"], started["headers"], body

    assert get()[0] == 200
    backend = connection.connection.info.backend_pid
    killer = connect_as_tests_do()
    try:
        killer.execute("SELECT pg_terminate_backend(%s)", [backend])
        wait_for(
            lambda: (
                not killer.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]
                ).fetchone()
            )
        )
    finally:
        killer.close()
    assert_503(*get())
    status, _, body = get()
    assert status == 200 and len(json.loads(body)) == 24
    assert connection.connection.info.backend_pid != backend
    connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_without_an_sqlstate_answers_503_then_reconnects(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    """The reply never comes (the network cut under the statement): psycopg's
    own error, no SQLSTATE, the connection broken. Still a 503."""
    settings = connection.settings_dict
    proxy = TcpProxy(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432)).start()
    saved = settings["HOST"], settings["PORT"]
    connection.close()
    settings["HOST"], settings["PORT"] = "127.0.0.1", proxy.port
    try:
        path = stats_path(project)
        assert client.get(path, **bearer(member_token)).status_code == 200
        proxy.drop_next_reply()
        response = client.get(path, **bearer(member_token))
        assert_503(response.status_code, response, response.content)
        assert proxy.dropped == 1
        assert connection.connection is not None and connection.connection.broken
        # What Django's request_finished does (the test client leaves it out).
        connection.close_if_unusable_or_obsolete()
        assert client.get(path, **bearer(member_token)).status_code == 200
    finally:
        connection.close()
        settings["HOST"], settings["PORT"] = saved
        proxy.stop()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_requests_wait_for_a_lock_instead_of_failing(
    live_server: Any, project: Project, member_token: ApiToken
) -> None:
    """Only a lost connection is a 503: a slow database is waited for."""
    url = live_server.url + stats_path(project)
    headers = {"Authorization": f"Bearer {member_token.plaintext}"}  # type: ignore[attr-defined]
    with ThreadPoolExecutor(1) as pool:
        with table_locked(ApiToken._meta.db_table):
            pending = pool.submit(http_get, url, headers)
            time.sleep(0.5)
            assert not pending.done()
        assert pending.result(timeout=30).status == 200


@pytest.mark.parametrize(
    "name",
    [
        "project-stats",
        "organization-projects",
        "organization-stats",
        "organization-stats-v2",
        "organization-stats-summary",
    ],
)
@pytest.mark.parametrize("authenticated", [True, False])
def test_more_query_parameters_than_django_parses_answer_a_json_400(
    client: Client,
    project: Project,
    member_token: ApiToken,
    name: str,
    authenticated: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = [project.organization.slug]
    if name == "project-stats":
        args.append(project.slug)
    query = "&".join(["project=1"] * 1001)  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1,000
    auth = bearer(member_token) if authenticated else {}
    with caplog.at_level(logging.ERROR, logger="django.security"):
        response = client.get(f"{reverse(f'project_stats:{name}', args=args)}?{query}", **auth)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in response.json()["detail"]
    assert any(r.name == "django.security.TooManyFieldsSent" for r in caplog.records)
