"""An organization of 70,000 projects: every read answers, with the buffer or without.

70,000 is past the 65,535 parameters PostgreSQL's protocol carries in one
statement and the 32,766 variables of SQLite's default build (Debian's allows
250,000: the test sets the connection's limit to the default). Each id list
travels as one parameter (``project_stats.sqllists``), so the buffered
organization reads, the Python ``tsdb`` functions given every id and the
explicit project lists of the endpoints answer instead of failing (on
PostgreSQL that was a 503 "database unavailable" that clients retried forever).

The projects come from one ``INSERT ... SELECT`` (no factory per project);
counts are recorded for three of them, two days back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from django.db import connection
from django.db.models import Field
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from project_stats import tsdb
from project_stats.constants import STAT_CODES
from project_stats.models import ApiToken, Organization, Project
from project_stats.tsdb import database

from .factories import OrganizationFactory, OrganizationMemberFactory

pytestmark = pytest.mark.django_db

PROJECTS = 70_000
HOUR, DAY = 3600, 86400
# SQLite's default SQLITE_MAX_VARIABLE_NUMBER (since 3.32).
SQLITE_DEFAULT_VARIABLES = 32_766


@pytest.fixture(autouse=True)
def sqlite_default_variables() -> Iterator[None]:
    """SQLite as most builds are: at most 32,766 variables in a statement."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = cast(sqlite3.Connection, connection.connection)
    before = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_VARIABLES)
    yield
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)


@pytest.fixture(params=["database", "buffer"])
def store(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    """The counts in the database alone, or behind the write buffer (one Redis)."""
    if request.param == "database":
        if tsdb.buffer_enabled():  # TEST_BUFFER runs every test buffered
            settings.PROJECT_STATS = {
                k: v for k, v in settings.PROJECT_STATS.items() if k != "BUFFER"
            }
        yield request.param
        return
    from .redis_servers import SINGLE_URL, buffer_settings, check_single, delete_keys

    check_single()
    config = buffer_settings("single", SINGLE_URL)
    settings.PROJECT_STATS = {**getattr(settings, "PROJECT_STATS", {}), "BUFFER": config}
    yield request.param
    delete_keys(config)


@pytest.fixture
def org() -> Organization:
    return OrganizationFactory(slug="huge")


def create_projects(organization: Organization, count: int) -> list[int]:
    """``count`` projects of ``organization`` in one statement; their ids, ascending.

    On PostgreSQL the projects table (and those referring to it) is emptied
    first, inside the test's transaction: the rows then go to new files,
    which the rollback drops with the truncation. Rolled back without it,
    they would stay on disk as dead rows, and PostgreSQL, estimating a table
    without statistics from its size, would plan later tests' statements for
    tens of thousands of projects (``test_prepared.py`` checks those plans).
    """
    qn = connection.ops.quote_name
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {qn(Project._meta.db_table)} CASCADE")

    def column(name: str) -> str:
        return qn(cast("Field[Any, Any]", Project._meta.get_field(name)).column)

    columns = ", ".join(column(name) for name in ("organization", "slug", "name", "date_added"))
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            # MariaDB stops a recursion after 1,000 rows, and || is OR there.
            cursor.execute("SET SESSION max_recursive_iterations = %s", [count + 1])
            slug, name = "CONCAT('bulk-', i)", "CONCAT('Bulk ', i)"
        else:
            slug, name = "'bulk-' || i", "'Bulk ' || i"
        cursor.execute(
            f"INSERT INTO {qn(Project._meta.db_table)} ({columns}) "  # noqa: S608
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            f"SELECT %s, {slug}, {name}, %s FROM n",
            [count, organization.pk, connection.ops.adapt_datetimefield_value(timezone.now())],
        )
    ids = list(
        Project.objects.filter(organization=organization)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert len(ids) == count
    return ids


@pytest.fixture
def base() -> int:
    """An hour of a whole day two days back: stored in the 1 h and 1 d rollups."""
    return (int(time.time()) // DAY - 2) * DAY + HOUR


@pytest.fixture
def ids(store: str, org: Organization, base: int) -> list[int]:
    """70,000 projects; three of them have counts (received 1, 2 and 3) at ``base``."""
    ids = create_projects(org, PROJECTS)
    for count, pk in enumerate(counted(ids), start=1):
        tsdb.incr(pk, "received", count=count, timestamp=base + 60)
    return ids


def counted(ids: list[int]) -> list[int]:
    return [ids[0], ids[len(ids) // 2], ids[-1]]


@pytest.fixture
def auth(org: Organization) -> dict[str, str]:
    user = OrganizationMemberFactory(organization=org).user
    _, plaintext = ApiToken.objects.issue(user, name="t", scopes=["org:read"])
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_tsdb_functions_take_every_id(ids: list[int], base: int) -> None:
    first, middle, last = counted(ids)
    expected = {first: 1, middle: 2, last: 3}
    by_project = tsdb.get_range_by_project(ids, "received", base, base, rollup=HOUR)
    assert len(by_project) == PROJECTS
    assert {pk: series[0][1] for pk, series in by_project.items() if series[0][1]} == expected
    assert tsdb.get_range_total(ids, "received", base, base, rollup=HOUR) == [(base, 6)]
    query = tsdb.plan_stats_range(["received", "rejected"], base, base, rollup=HOUR)
    received = STAT_CODES["received"]
    assert tsdb.get_stats_by_project(ids, query) == {
        (pk, received, base): count for pk, count in expected.items()
    }
    tsdb.flush()
    # The database's half of a buffered read, with as many batch ids as projects.
    cells, applied = database.read_cells(
        ids, [received], "", HOUR, base, base, [f"batch-{i}" for i in range(PROJECTS)]
    )
    assert cells == {(pk, received, base): count for pk, count in expected.items()}
    assert applied == set()
    day = base - HOUR
    [result] = tsdb.backfill([DAY], since=day, until=day + DAY, projects=ids, dry_run=True)
    assert result.examined == 3
    assert tsdb.delete(ids) > 0
    assert tsdb.get_range_total(ids, "received", base, base, rollup=HOUR) == [(base, 0)]


def test_the_organization_endpoints_answer(
    client: Client, ids: list[int], base: int, auth: dict[str, str], settings: Any
) -> None:
    first, middle, last = counted(ids)
    expected = {first: 1, middle: 2, last: 3}
    stats = reverse("project_stats:organization-stats", args=["huge"])
    stats_v2 = reverse("project_stats:organization-stats-v2", args=["huge"])
    one_hour = {"resolution": "1h", "since": base, "until": base}

    response = client.get(stats, one_hour, **auth)
    assert response.status_code == 200, response.content
    assert response.json() == [[base, 6]]

    response = client.get(stats, {**one_hour, "group": "project"}, **auth)
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body) == PROJECTS
    assert {int(pk): points[0][1] for pk, points in body.items() if points[0][1]} == expected

    usage = {
        "field": "sum(quantity)",
        "category": "error",
        "groupBy": "project",
        "interval": "1h",
        "start": iso(base),
        "end": iso(base + HOUR),
    }
    response = client.get(stats_v2, usage, **auth)
    assert response.status_code == 200, response.content
    groups = {g["by"]["project"]: g["totals"]["sum(quantity)"] for g in response.json()["groups"]}
    assert groups == expected

    # Every id named in the query (a site may lift Django's 1,000 parameters).
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = None
    response = client.get(stats_v2, {**usage, "project": ids}, **auth)
    assert response.status_code == 200, response.content
    groups = {g["by"]["project"]: g["totals"]["sum(quantity)"] for g in response.json()["groups"]}
    assert groups == expected
    response = client.get(stats, {**one_hour, "projectID": ids}, **auth)
    assert response.status_code == 200, response.content
    assert response.json() == [[base, 6]]

    projects = reverse("project_stats:organization-projects", args=["huge"])
    response = client.get(projects, {"per_page": 100}, **auth)
    assert response.status_code == 200, response.content
    assert len(response.json()) == 100
