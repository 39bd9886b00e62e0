"""A database that goes away answers 503 with a JSON detail, and the next request recovers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import InterfaceError, OperationalError, connection
from django.test import Client, RequestFactory
from django.urls import reverse

from project_stats.exceptions import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS, exception_handler
from project_stats.models import ApiToken, Project

from .conftest import bearer
from .http import http_get

UNAVAILABLE = {"detail": DATABASE_UNAVAILABLE}


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


@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_the_handler_answers_database_errors_with_503(error: type[Exception]) -> None:
    response = exception_handler(error("connection lost"), {})
    assert response is not None
    assert response.status_code == 503
    assert response.data == UNAVAILABLE
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_the_handler_leaves_other_errors_to_drf_and_django() -> None:
    assert exception_handler(RuntimeError("bug"), {}) is None


@pytest.mark.django_db
def test_a_failing_statement_answers_503_on_every_endpoint_then_recovers(
    client: Client, project: Project, member_token: ApiToken
) -> None:
    def fail(*args: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

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
