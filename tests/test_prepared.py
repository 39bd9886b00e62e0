"""The read path's statements prepared once per connection on PostgreSQL, and their plans."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import (
    DatabaseError,
    DataError,
    NotSupportedError,
    connection,
    connections,
    transaction,
)
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from project_stats import prepared, tsdb
from project_stats.models import ApiToken, EventCount, Organization, Project
from project_stats.tsdb import database

from .factories import OrganizationMemberFactory, ProjectFactory

pytestmark = pytest.mark.django_db

# The access statement's first common table expression.
ACCESS = "WITH lookup AS ("


def stats_path(project: Project) -> str:
    return reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": project.organization.slug,
            "project_id_or_slug": project.slug,
        },
    )


def organization_stats_path(organization: Organization) -> str:
    return reverse(
        "project_stats:organization-stats",
        kwargs={"organization_id_or_slug": organization.slug},
    )


@pytest.fixture
def auth(project: Project) -> dict[str, str]:
    user = OrganizationMemberFactory(organization=project.organization).user
    _, plaintext = ApiToken.objects.issue(user, scopes=["project:read", "org:read"])
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def prepared_statements() -> list[tuple[str, str]]:
    """``(name, text)`` of the statements prepared on the test's connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements ORDER BY name")
        return list(cursor.fetchall())


@pytest.fixture
def new_statements() -> Any:
    """The texts prepared since the test started (a connection may outlive a test)."""
    if connection.vendor != "postgresql":
        return lambda: []
    before = {name for name, _ in prepared_statements()}
    return lambda: [text for name, text in prepared_statements() if name not in before]


@pytest.fixture
def statements() -> Iterator[list[tuple[str, list[Any]]]]:
    """Every ``(sql, params)`` run through Django's cursors while the test runs."""
    seen: list[tuple[str, list[Any]]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


@pytest.mark.postgres
def test_the_access_statement_is_prepared_once_per_connection(
    client: Client, project: Project, auth: dict[str, str], new_statements: Any
) -> None:
    other = ProjectFactory(organization=project.organization)
    now = int(timezone.now().timestamp())
    # Other projects, ranges and resolutions of the same shape: one text.
    for target, query in [
        (project, ""),
        (other, ""),
        (project, f"?since={now - 3600}&until={now}&resolution=10s"),
        (other, f"?since={now - 86400 * 80}&until={now}&resolution=1d"),
    ]:
        response = client.get(stats_path(target) + query, **auth)
        assert response.status_code == 200, response.content
    (text,) = new_statements()
    assert text.startswith(ACCESS)
    assert "$1" in text and project.slug not in text  # values are bound, not written in
    # The site's own setting is left as it was (Django's default: no preparation).
    assert connection.connection.prepare_threshold is None


@pytest.mark.postgres
def test_the_sites_other_queries_are_not_prepared(project: Project, new_statements: Any) -> None:
    for _ in range(10):
        assert Project.objects.filter(pk=project.pk).exists()
        prepared.fetch_all(connection, "SELECT %s + 1", [1])
    assert new_statements() == ["SELECT $1 + 1"]


@pytest.mark.postgres
def test_every_integer_is_bound_as_bigint(project: Project, new_statements: Any) -> None:
    # psycopg types small ints as smallint, larger ones as integer: the type
    # is part of the prepared statement, so one shape would need three.
    for value in (1, 70_000, 2**40):
        assert prepared.fetch_all(connection, "SELECT %s AS bigint_test", [value]) == [(value,)]
    assert new_statements() == ["SELECT $1 AS bigint_test"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT parameter_types::text FROM pg_prepared_statements WHERE statement = %s",
            ["SELECT $1 AS bigint_test"],
        )
        assert cursor.fetchall() == [("{bigint}",)]


@pytest.mark.postgres
def test_the_buffered_reads_database_half_is_prepared(
    project: Project, new_statements: Any
) -> None:
    start = int(timezone.now().timestamp()) // 3600 * 3600 - 7200
    tsdb.incr(project, "received", count=4, timestamp=start)
    for _ in range(3):
        cells, applied = database.read_cells(
            [project.pk], [0], "", 3600, start, start + 3600, ["no-such-batch"]
        )
        assert cells == {(project.pk, 0, start): 4}
        assert applied == set()
        assert database.read_buckets(project.pk, 0, "", 3600, start, start) == {start: 4}
    texts = new_statements()
    assert len(texts) == 2
    assert any("UNION ALL" in text for text in texts)  # read_cells with its batch ids


def parameter_types(text: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT parameter_types::text FROM pg_prepared_statements WHERE statement = %s",
            [text],
        )
        ((types,),) = cursor.fetchall()
    return str(types)


@pytest.mark.postgres
def test_id_lists_are_one_array_parameter_whatever_their_length(
    project: Project, new_statements: Any
) -> None:
    """One statement text, so one prepared statement, for any number of ids:
    psycopg would otherwise prepare one per length (about 0.8 MB of backend
    memory each), and past 65,535 parameters the driver refuses the statement."""
    start = int(timezone.now().timestamp()) // 3600 * 3600 - 7200
    tsdb.incr(project, "received", count=4, timestamp=start)
    for count in (1, 2, 3, 70_000):
        # Small ids and large ones: psycopg would type them int2, int4, int8.
        ids = [project.pk, *range(2**40, 2**40 + count - 1)]
        batches = [f"batch-{i}" for i in range(count)]
        cells, applied = database.read_cells(ids, [0, 1], "", 3600, start, start, batches)
        assert cells == {(project.pk, 0, start): 4}
        assert applied == set()
    (text,) = new_statements()
    assert text.count("ANY(") == 3 and "$7" in text and "$8" not in text
    # Each list typed as its column's values are, whatever the values: the
    # ids bigint[] (plain ints of any size), the stats smallint[] (Django
    # types them as the field's), the batch ids as their column.
    assert parameter_types(text) == (
        '{bigint[],smallint[],integer,text,"timestamp with time zone",'
        '"timestamp with time zone","character varying[]"}'
    )


@pytest.mark.postgres
def test_the_access_statement_takes_any_number_of_project_ids(
    client: Client, project: Project, auth: dict[str, str], new_statements: Any
) -> None:
    others = [ProjectFactory(organization=project.organization) for _ in range(3)]
    path = organization_stats_path(project.organization)
    for chosen in ([project], [project, *others], others[:2]):
        query = "&".join(f"projectID={p.pk}" for p in chosen)
        response = client.get(f"{path}?{query}", **auth)
        assert response.status_code == 200, response.content
    (text,) = new_statements()
    assert text.startswith(ACCESS) and "= ANY(CAST($" in text
    assert "bigint[]" in parameter_types(text)


@pytest.mark.postgres
def test_the_setting_turns_preparation_off(
    client: Client, project: Project, auth: dict[str, str], settings: Any, new_statements: Any
) -> None:
    """Behind a pooler that shares connections per transaction nothing may be prepared."""
    tsdb.incr(project, "received", count=3)
    settings.PROJECT_STATS = {"PREPARED_STATEMENTS": False}
    for _ in range(7):
        response = client.get(stats_path(project), **auth)
        assert response.status_code == 200
        assert sum(count for _, count in response.json()) == 3
    assert new_statements() == []


@pytest.mark.postgres
def test_a_site_that_turned_preparation_off_is_honoured(
    client: Client, project: Project, auth: dict[str, str], monkeypatch: Any, new_statements: Any
) -> None:
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {"prepare_threshold": None})
    for _ in range(7):
        assert client.get(stats_path(project), **auth).status_code == 200
    assert new_statements() == []


def test_sqlite_prepares_nothing(project: Project) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    assert not prepared.preparing(connection)
    assert prepared.fetch_all(connection, "SELECT %s + 1", [1]) == [(2,)]


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", ()):
        yield from _scans(child)


def _as_prepared(sql: str) -> str:
    """``sql`` as PostgreSQL shows it prepared: ``%s`` numbered ``$1``, ``$2``..."""
    parts = sql.split("%s")
    text = parts[0]
    for number, part in enumerate(parts[1:], start=1):
        text += f"${number}{part}"
    return text.replace("%%", "%")


def _generic_plan(sql: str, params: list[Any]) -> dict[str, Any]:
    """The generic plan of the prepared ``sql`` (PostgreSQL keeps one after five runs)."""
    (name,) = [n for n, text in prepared_statements() if text == _as_prepared(sql)]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        marks = ", ".join(["%s"] * len(params))
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({marks})", params)
        ((plan,),) = cursor.fetchall()
        cursor.execute("SET LOCAL plan_cache_mode = auto")
    return plan[0]["Plan"]  # type: ignore[no-any-return]


@pytest.mark.postgres
@pytest.mark.parametrize("shape", ["project", "organization", "by project"])
def test_the_generic_plan_probes_the_unique_index(
    client: Client,
    project: Project,
    auth: dict[str, str],
    statements: list[tuple[str, list[Any]]],
    shape: str,
) -> None:
    """The counts come from the unique index, one probe per project, never a range scan.

    A small table without statistics is where the planner chose otherwise:
    scanning the (rollup, timestamp) index across every project and joining
    the target afterwards.
    """
    projects = [project, *(ProjectFactory(organization=project.organization) for _ in range(3))]
    start = timezone.now() - timedelta(days=30)
    tsdb.incr_many(
        (p, stat, start + timedelta(hours=hour), 3)
        for p in projects
        for stat in ("received", "rejected")
        for hour in range(30 * 24)
    )
    if shape == "project":
        path = stats_path(project)
    else:
        group = "organization" if shape == "organization" else "project"
        path = f"{organization_stats_path(project.organization)}?group={group}"
    for _ in range(6):
        response = client.get(path, **auth)
        assert response.status_code == 200, response.content
    sql, params = next((s, p) for s, p in reversed(statements) if s.startswith(ACCESS))
    scans = [
        scan
        for scan in _scans(_generic_plan(sql, params))
        if scan["Relation Name"] == "project_stats_eventcount"
    ]
    assert scans, sql
    for scan in scans:
        assert scan.get("Index Name") == "project_stats_eventcount_bucket_uniq", scan
        assert "project_id = " in scan["Index Cond"], scan


@pytest.mark.postgres
def test_the_statement_is_logged_as_django_logs_queries(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="django.db.backends"),
        CaptureQueriesContext(connection) as queries,
    ):
        assert prepared.fetch_all(connection, "SELECT %s AS logged_value", [41]) == [(41,)]
    assert queries.captured_queries[-1]["sql"] == "SELECT 41 AS logged_value"
    assert any("SELECT 41 AS logged_value" in record.getMessage() for record in caplog.records)


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test server; its port."""
    binary = shutil.which("pgbouncer")
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    settings = connection.settings_dict
    port = next(p for p in range(18250, 18300) if _port_is_free(p))
    (tmp_path / "users.txt").write_text(f'"{settings["USER"]}" ""\n')
    (tmp_path / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {tmp_path / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 1\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    tmp_path.chmod(0o755)
    # PgBouncer refuses to run as root: it switches to the server's user then.
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(  # noqa: S603
        [binary, *user, str(tmp_path / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while _port_is_free(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("pgbouncer did not start")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.postgres
def test_behind_a_transaction_pooler_preparation_must_be_off(pgbouncer: int, settings: Any) -> None:
    """Two clients' statements meet on one server connection: only unprepared ones work."""
    wrapper = type(connections[connection.alias])
    clients = [
        wrapper(
            {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": pgbouncer, "CONN_MAX_AGE": 0},
            alias=f"pooled-{name}",
        )
        for name in ("a", "b")
    ]
    try:
        first, second = clients
        assert prepared.fetch_all(first, "SELECT %s + 1", [1]) == [(2,)]
        # psycopg names the second client's statement as it named the first
        # one's, on the server connection the first client just gave back.
        with pytest.raises(DatabaseError, match="prepared statement"):
            prepared.fetch_all(second, "SELECT %s * 2", [1])
        second.close()
        settings.PROJECT_STATS = {"PREPARED_STATEMENTS": False}
        for _ in range(3):
            for client in clients:
                assert prepared.fetch_all(client, "SELECT %s * 2", [1]) == [(2,)]
                assert prepared.fetch_all(client, "SELECT %s + 3", [1]) == [(4,)]
    finally:
        for client in clients:
            client.close()


# What the server, a pool or the site does to a connection's prepared statements.


def other_connection() -> Any:
    """A psycopg connection of its own to the test database (autocommit)."""
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


def counted(response: Any) -> int:
    assert response.status_code == 200, response.content
    return sum(count for _, count in response.json())


@contextmanager
def column_type_changed(model: Any, field: str) -> Iterator[None]:
    """``model.field``'s column turned into another integer type from another
    connection (what switching a key to ``BigAutoField`` migrates), and back."""
    table, column = model._meta.db_table, model._meta.get_field(field).column
    with other_connection() as other:
        ((current,),) = other.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = %s",
            [table, column],
        ).fetchall()
        changed = "bigint" if current == "integer" else "integer"
        other.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {changed}')
        try:
            yield
        finally:
            other.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {current}')


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_column_type_change_is_prepared_anew_on_a_live_connection(
    client: Client, project: Project, auth: dict[str, str], new_statements: Any
) -> None:
    """The access statement returns the token's user id: its result type changes.

    PostgreSQL refuses to run the old statement ("cached plan must not change
    result type"): it is deallocated and prepared again, and the request answers.
    """
    tsdb.incr(project, "received", count=3)
    assert counted(client.get(stats_path(project), **auth)) == 3
    with column_type_changed(ApiToken, "user"):
        for _ in range(3):
            assert counted(client.get(stats_path(project), **auth)) == 3
    assert counted(client.get(stats_path(project), **auth)) == 3
    assert len([text for text in new_statements() if text.startswith(ACCESS)]) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_a_changed_statement_fails_once_then_is_prepared_anew(
    project: Project, auth: dict[str, str]
) -> None:
    """The failed statement has aborted the transaction: no retry there (a
    savepoint around every statement would cost a round trip each way).
    The connection is put back in step before its next statement."""
    token = ApiToken.objects.get()
    sql = f'SELECT "user_id" FROM "{ApiToken._meta.db_table}" WHERE "id" = %s'  # noqa: S608
    assert prepared.fetch_all(connection, sql, [token.pk]) == [(token.user_id,)]
    # Rolled back to a savepoint: the outer transaction goes on.
    with column_type_changed(ApiToken, "user"), transaction.atomic():
        with pytest.raises(NotSupportedError), transaction.atomic():
            prepared.fetch_all(connection, sql, [token.pk])
        assert prepared.fetch_all(connection, sql, [token.pk]) == [(token.user_id,)]
    # Out of a transaction the statement is prepared anew for the restored type.
    assert prepared.fetch_all(connection, sql, [token.pk]) == [(token.user_id,)]
    with column_type_changed(ApiToken, "user"):
        with pytest.raises(NotSupportedError), transaction.atomic():
            prepared.fetch_all(connection, sql, [token.pk])
        with transaction.atomic():
            assert prepared.fetch_all(connection, sql, [token.pk]) == [(token.user_id,)]


def discard(command: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(command)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", ["DISCARD ALL", "DEALLOCATE ALL"])
def test_statements_the_site_discarded_are_prepared_anew(
    client: Client, project: Project, auth: dict[str, str], command: str, new_statements: Any
) -> None:
    """psycopg notices such a command only while its own preparation is on."""
    tsdb.incr(project, "received", count=2)
    try:
        for _ in range(3):
            # Each read finds its statement gone.
            assert counted(client.get(stats_path(project), **auth)) == 2
            discard(command)
            assert prepared.fetch_all(connection, "SELECT %s + 1", [1]) == [(2,)]
            discard(command)
        assert prepared.fetch_all(connection, "SELECT %s + 1", [2]) == [(3,)]
        assert new_statements() == ["SELECT $1 + 1"]
    finally:
        connection.close()  # DISCARD ALL reset the session's settings too (its time zone)


def _discard_all(raw: Any) -> None:
    """A pool's reset as PgBouncer's session mode resets a server connection."""
    raw.execute("DISCARD ALL")


@pytest.fixture
def pooled() -> Iterator[Any]:
    """The test database through Django's psycopg pool, whose reset runs
    ``DISCARD ALL``; ``pooled.close()`` is what ends a request: the connection
    goes back to the pool (the test client leaves connections open)."""
    pytest.importorskip("psycopg_pool")
    alias = connection.alias
    options = {
        **connection.settings_dict["OPTIONS"],
        "pool": {"min_size": 1, "max_size": 1, "reset": _discard_all},
    }
    wrapper = type(connections[alias])(
        {**connection.settings_dict, "CONN_MAX_AGE": 0, "OPTIONS": options}, alias=alias
    )
    original = connections[alias]
    connections[alias] = wrapper
    try:
        yield wrapper
    finally:
        connections[alias] = original
        wrapper.close()
        wrapper.close_pool()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pool_whose_reset_discards_statements(
    client: Client, project: Project, auth: dict[str, str], pooled: Any, caplog: Any
) -> None:
    tsdb.incr(project, "received", count=5)
    pooled.close()
    for _ in range(4):
        assert counted(client.get(stats_path(project), **auth)) == 5
        pooled.close()
    # Preparing there costs a round trip and saves nothing: it stopped.
    assert "discards prepared statements" in caplog.text
    assert not prepared.preparing(pooled)
    pooled.ensure_connection()
    with pooled.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pool_whose_reset_discards_statements_with_atomic_requests(
    client: Client,
    project: Project,
    auth: dict[str, str],
    pooled: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the request's transaction the first statement found missing fails that request."""
    monkeypatch.setitem(connections.settings[connection.alias], "ATOMIC_REQUESTS", True)
    tsdb.incr(project, "received", count=5)
    pooled.close()
    client.raise_request_exception = False
    statuses = []
    for _ in range(5):
        statuses.append(client.get(stats_path(project), **auth).status_code)
        pooled.close()
    assert statuses == [200, 500, 200, 200, 200]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_failed_first_executions_leave_no_statement_behind(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    """Each request times out while its statement is planned: the statement
    was prepared (psycopg forgot it) and the execution failed."""
    client.raise_request_exception = False
    index = next(i.name for i in EventCount._meta.constraints if i.name.endswith("bucket_uniq"))
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '50ms'")
    try:
        with other_connection() as locker, locker.transaction():
            # Planning opens the table's indexes: it waits for this lock. The
            # statement's parse does not (it locks the table, which REINDEX shares).
            locker.execute(f'REINDEX INDEX "{index}"')
            for _ in range(20):
                assert client.get(stats_path(project), **auth).status_code == 500
            texts = [text for _, text in prepared_statements()]
            assert len(texts) == len(set(texts)), texts  # at most one statement per text
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET statement_timeout")
    assert counted(client.get(stats_path(project), **auth)) == 0
    texts = [text for _, text in prepared_statements()]
    assert len(texts) == len(set(texts)), texts


@pytest.mark.postgres
def test_failures_inside_transactions_leave_no_statement_behind(new_statements: Any) -> None:
    for _ in range(20):
        with pytest.raises(DataError), transaction.atomic():
            prepared.fetch_all(connection, "SELECT 10 / %s AS leak_test", [0])
    assert len(new_statements()) <= 1
    assert prepared.fetch_all(connection, "SELECT 10 / %s AS leak_test", [5]) == [(2,)]
    assert new_statements() == ["SELECT 10 / $1 AS leak_test"]
