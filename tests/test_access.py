"""The read path's statement: ids or slugs, one round trip, nothing honoured after it changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from project_stats import access, tsdb
from project_stats.models import ApiToken, Organization, OrganizationMember, Project
from project_stats.views import ProjectStatsView

from .factories import OrganizationFactory, OrganizationMemberFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

NOT_FOUND = {"detail": "The requested resource does not exist"}


def stats_path(organization: object, project: object) -> str:
    return reverse(
        "project_stats:project-stats",
        kwargs={"organization_id_or_slug": organization, "project_id_or_slug": project},
    )


def org_path(name: str, organization: object) -> str:
    return reverse(f"project_stats:{name}", kwargs={"organization_id_or_slug": organization})


@pytest.fixture
def member(project: Project) -> Any:
    return OrganizationMemberFactory(organization=project.organization).user


@pytest.fixture
def auth(member: Any) -> dict[str, str]:
    _, plaintext = ApiToken.objects.issue(member, scopes=["project:read", "org:read"])
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("12", 12),
        ("007", 7),
        ("0", None),  # ids start at 1 (MariaDB refuses to bind 0 for an AutoField)
        ("000", None),
        ("pump-station", "pump-station"),
        ("12a", "12a"),
        ("-12", "-12"),
        ("\u0663", "\u0663"),  # an Arabic-Indic digit is not an ASCII digit: a slug
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), None),
        ("9" * 60, None),
        ("", None),
        ("a" * 51, None),
        ("a\x00b", None),
        ("\ud800", None),
        (None, None),
        (5, None),
    ],
)
def test_a_segment_of_digits_is_an_id_anything_else_a_slug(segment: Any, expected: Any) -> None:
    assert access.id_or_slug(segment) == expected


def test_every_combination_of_ids_and_slugs_is_the_same_project(
    client: Client, project: Project, auth: dict[str, str], django_assert_max_num_queries: Any
) -> None:
    tsdb.incr(project, "received", count=7)
    org = project.organization
    client.get(stats_path(org.slug, project.slug), **auth)  # records last_used
    bodies = []
    for organization, segment in [
        (org.slug, project.slug),
        (org.pk, project.slug),
        (org.slug, project.pk),
        (org.pk, project.pk),
    ]:
        with django_assert_max_num_queries(1):
            response = client.get(stats_path(organization, segment), **auth)
        assert response.status_code == 200, (organization, segment)
        bodies.append(response.json())
    assert sum(count for _, count in bodies[0]) == 7
    assert all(body == bodies[0] for body in bodies)


def test_paths_by_id_or_slug_run_the_same_statement(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    org = project.organization
    client.get(stats_path(org.slug, project.slug), **auth)
    shapes = set()
    for organization, segment in [(org.slug, project.slug), (org.pk, project.pk)]:
        with CaptureQueriesContext(connection) as queries:
            client.get(stats_path(organization, segment), **auth)
        (statement,) = queries.captured_queries
        # The same statement but for the compared columns and the bound values.
        shapes.add(statement["sql"].count("SELECT"))
    assert len(shapes) == 1


def test_unknown_and_invisible_ids_are_the_same_404_as_slugs(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    org = project.organization
    theirs = ProjectFactory()  # another organization's project
    sibling_elsewhere = ProjectFactory(organization=theirs.organization)
    missing = Project.objects.order_by("-pk").values_list("pk", flat=True).first() + 1000  # type: ignore[operator]
    for organization, segment in [
        (org.pk, missing),
        (org.pk + 1000, project.pk),
        (org.pk, theirs.pk),  # a project id of another organization under ours
        (theirs.organization.pk, theirs.pk),
        (theirs.organization.slug, sibling_elsewhere.pk),
        (org.pk, "no-such-project"),
        (str(2**63), project.slug),
        (org.slug, "9" * 30),
        (org.pk, 0),
    ]:
        response = client.get(stats_path(organization, segment), **auth)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), (organization, segment)


def test_organization_endpoints_take_an_id(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    tsdb.incr(project, "received", count=3)
    org = project.organization
    listing = client.get(org_path("organization-projects", org.pk), **auth)
    assert listing.status_code == 200
    assert [p["slug"] for p in listing.json()] == [project.slug]
    stats = client.get(org_path("organization-stats", org.pk), **auth)
    assert stats.status_code == 200
    assert sum(c for _, c in stats.json()) == 3
    stranger = OrganizationFactory()
    for name in ("organization-projects", "organization-stats"):
        for organization in (stranger.pk, stranger.pk + 1000, str(2**64)):
            response = client.get(org_path(name, organization), **auth)
            assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_renamed_project_redirects_when_the_organization_is_given_by_id(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    org = project.organization
    old = stats_path(org.pk, project.slug)
    project.slug = "renamed"
    project.save()
    response = client.get(old, {"stat": "rejected"}, **auth)
    assert response.status_code == 302
    assert response["Location"] == stats_path(org.pk, "renamed") + "?stat=rejected"
    assert client.get(response["Location"], **auth).status_code == 200
    outsider = ApiToken.objects.issue(UserFactory())[1]
    response = client.get(old, HTTP_AUTHORIZATION=f"Bearer {outsider}")
    assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_organization_stats_by_project_in_one_statement(
    client: Client, project: Project, auth: dict[str, str], django_assert_max_num_queries: Any
) -> None:
    org = project.organization
    other = ProjectFactory(organization=org)
    tsdb.incr(other, "received", count=4)
    elsewhere = ProjectFactory()
    client.get(org_path("organization-stats", org.pk), **auth)
    with django_assert_max_num_queries(1):
        response = client.get(
            org_path("organization-stats", org.pk),
            {"group": "project", "projectID": [other.pk, elsewhere.pk]},
            **auth,
        )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [str(other.pk)]
    assert sum(c for _, c in body[str(other.pk)]) == 4


def test_changes_take_effect_on_the_next_request(
    client: Client, project: Project, member: Any
) -> None:
    """Nothing from one request is trusted on the next: each reads the database again."""
    token, plaintext = ApiToken.objects.issue(member, scopes=["project:read"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
    path = stats_path(project.organization.pk, project.slug)

    def status() -> int:
        return int(client.get(path, **headers).status_code)

    assert status() == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert status() == 401
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None)
    assert status() == 200
    get_user_model()._default_manager.filter(pk=member.pk).update(is_active=False)
    assert status() == 401
    get_user_model()._default_manager.filter(pk=member.pk).update(is_active=True)
    assert status() == 200
    OrganizationMember.objects.filter(user=member).delete()
    assert status() == 404
    OrganizationMember.objects.create(organization=project.organization, user=member)
    assert status() == 200
    project.slug = "moved-on"
    project.save()
    assert status() == 302
    ApiToken.objects.filter(pk=token.pk).revoke()
    assert status() == 401


def test_a_json_request_never_loads_the_user(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    client.get(stats_path(project.organization.slug, project.slug), **auth)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(stats_path(project.organization.slug, project.slug), **auth)
    assert response.status_code == 200
    user_table = get_user_model()._meta.db_table
    assert [q["sql"] for q in queries.captured_queries if f'FROM "{user_table}"' in q["sql"]] == []
    user = response.wsgi_request.user  # type: ignore[attr-defined]
    assert isinstance(user, access.TokenUser) and not user.loaded


def test_the_browsable_api_loads_the_real_user(
    client: Client, project: Project, member: Any, auth: dict[str, str]
) -> None:
    response = client.get(
        stats_path(project.organization.slug, project.slug), HTTP_ACCEPT="text/html", **auth
    )
    assert response.status_code == 200
    assert member.get_username() in response.content.decode()
    user = response.wsgi_request.user  # type: ignore[attr-defined]
    assert user.loaded and user == member


def test_superusers_see_every_project_members_only_theirs(client: Client) -> None:
    ours, theirs = ProjectFactory(), ProjectFactory()
    member = OrganizationMemberFactory(organization=ours.organization).user
    superuser = UserFactory(is_superuser=True)
    for user, project, expected in [
        (member, ours, 200),
        (member, theirs, 404),
        (superuser, theirs, 200),
    ]:
        plaintext = ApiToken.objects.issue(user)[1]
        response = client.get(
            stats_path(project.organization.pk, project.pk),
            HTTP_AUTHORIZATION=f"Bearer {plaintext}",
        )
        assert response.status_code == expected


def test_a_session_runs_the_same_statement(
    client: Client, project: Project, member: Any, django_assert_max_num_queries: Any
) -> None:
    client.force_login(member)
    path = stats_path(project.organization.pk, project.pk)
    assert client.get(path).status_code == 200
    with django_assert_max_num_queries(3):  # session, user, the statement
        assert client.get(path).status_code == 200


def test_views_accept_extra_url_arguments(project: Project, auth: dict[str, str]) -> None:
    """Sites may include the API under a versioned prefix (a ``version`` argument)."""
    request = APIRequestFactory().get("/", **auth)
    response = ProjectStatsView.as_view()(
        request,
        organization_id_or_slug=str(project.organization.pk),
        project_id_or_slug=project.slug,
        version="0",
    )
    assert response.status_code == 200


def test_without_reads_in_one_statement_the_view_reads_through_tsdb(
    client: Client,
    project: Project,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    django_assert_max_num_queries: Any,
) -> None:
    """The hook for a store that keeps part of a read elsewhere (a write buffer)."""
    now = time.time()
    tsdb.incr(project, "generated", timestamp=now, count=2, environment="production")
    path = stats_path(project.organization.slug, project.slug)
    params = {"stat": "generated", "environment": "production"}
    expected = client.get(path, params, **auth).json()
    calls: list[str] = []
    real_get_range, real_exists = tsdb.get_range, tsdb.environment_exists

    def get_range(*args: Any, **kwargs: Any) -> Any:
        calls.append("get_range")
        return real_get_range(*args, **kwargs)

    def environment_exists(*args: Any, **kwargs: Any) -> Any:
        calls.append("environment_exists")
        return real_exists(*args, **kwargs)

    monkeypatch.setattr(tsdb, "reads_in_one_statement", lambda: False)
    monkeypatch.setattr(tsdb, "get_range", get_range)
    monkeypatch.setattr(tsdb, "environment_exists", environment_exists)
    with django_assert_max_num_queries(3):  # lookup, environment, counts
        assert client.get(path, params, **auth).json() == expected
    assert calls == ["environment_exists", "get_range"]


def test_range_query_in_a_statement_matches_get_range(project: Project) -> None:
    now = time.time()
    for offset, count in ((0, 1), (3600, 2), (7200, 5)):
        tsdb.incr(project, "received", timestamp=now - offset, count=count)
    other = ProjectFactory(organization=project.organization)
    tsdb.incr(other, "received", timestamp=now, count=10)
    start, end = now - 86399, now
    read = tsdb.plan_range("received", start, end, now=now)
    assert read.sql(connection, "SELECT 1") is not None
    sql, params = read.sql(connection, "SELECT %s", [project.pk])  # type: ignore[misc]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    assert read.series(rows) == tsdb.get_range(project, "received", start, end, now=now)
    both = f"SELECT id FROM {Project._meta.db_table} WHERE organization_id = %s"  # noqa: S608
    summed = read.sql(connection, both, [project.organization_id], summed=True)
    assert summed is not None
    with connection.cursor() as cursor:
        cursor.execute(*summed)
        total = read.series(cursor.fetchall())
    assert total == tsdb.get_range_total([project, other], "received", start, end, now=now)


def test_look_up_reads_an_organization_target(project: Project, member: Any) -> None:
    found = access.look_up(organization=project.organization.slug, user=member, now=timezone.now())
    assert found.target == access.Target(
        project.organization_id, project.organization.slug, project.organization_id
    )
    assert found.token is None and found.counts is None
    assert (
        access.look_up(
            organization=Organization.objects.count() + 99, user=member, now=timezone.now()
        ).target
        is None
    )


def test_a_bad_project_id_reads_no_counts(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    org = project.organization
    client.get(org_path("organization-stats", org.pk), **auth)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(
            org_path("organization-stats", org.pk), {"projectID": "x", "group": "project"}, **auth
        )
    assert response.status_code == 400
    (statement,) = queries.captured_queries
    assert "eventcount" not in statement["sql"]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], int]:
    """Database round trips of a call, counted in psycopg: each wait for the server's results.

    Django's query log misses what psycopg sends on its own (the preparation
    of a statement, transaction commands); this counts every exchange.
    """
    import psycopg._cursor_base
    import psycopg.generators

    count = [0]
    real = psycopg.generators.execute

    def execute(pgconn: Any) -> Any:
        count[0] += 1
        return real(pgconn)

    # The cursor holds its own reference; connections look it up on the module.
    monkeypatch.setattr(psycopg._cursor_base, "execute", execute)
    monkeypatch.setattr(psycopg.generators, "execute", execute)

    def measure(call: Callable[[], Any]) -> int:
        before = count[0]
        call()
        return count[0] - before

    return measure


@pytest.mark.postgres
def test_the_default_request_is_one_round_trip(
    client: Client,
    project: Project,
    auth: dict[str, str],
    round_trips: Callable[[Callable[[], Any]], int],
) -> None:
    path = stats_path(project.organization.slug, project.slug)

    def get() -> None:
        assert client.get(path, **auth).status_code == 200

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            return int(cursor.fetchone()[0])

    # A new token: the statement and the write of last_used; the statement
    # is prepared first where this connection has not run it yet (one
    # exchange more, once per connection).
    before = prepared()
    with CaptureQueriesContext(connection) as queries:
        trips = round_trips(get)
    assert trips == 2 + (prepared() - before)
    assert prepared() - before in (0, 1)
    assert len(queries.captured_queries) == 2
    assert queries.captured_queries[1]["sql"].startswith("UPDATE")
    # From then on: one round trip, the statement.
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            assert round_trips(get) == 1
        assert len(queries.captured_queries) == 1
    # last_used is written again once it is over a minute old: one more.
    ApiToken.objects.update(last_used=timezone.now() - timedelta(minutes=2))
    assert round_trips(get) == 2
    assert round_trips(get) == 1


def test_the_default_request_runs_one_statement(
    client: Client, project: Project, auth: dict[str, str]
) -> None:
    """Both databases: the statement, and the write of last_used when it is due."""
    path = stats_path(project.organization.slug, project.slug)
    counts = []
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(path, **auth).status_code == 200
        counts.append(len(queries.captured_queries))
    assert counts == [2, 1, 1]


def test_stats_query_in_the_statement_matches_get_stats_by_project(
    project: Project, member: Any
) -> None:
    hour = int(time.time()) // 3600 * 3600 - 3 * 3600
    other = ProjectFactory(organization=project.organization)
    for target, stat, count in [
        (project, "received", 4),
        (project, "cors", 1),
        (other, "rejected", 2),
    ]:
        tsdb.incr(target, stat, timestamp=hour, count=count)
        tsdb.incr(target, stat, timestamp=hour + 3600, count=count + 1)
    tsdb.incr(ProjectFactory(), "received", timestamp=hour, count=100)  # another organization's
    read = tsdb.plan_stats_range(["received", "rejected", "cors"], hour, hour + 3600, rollup=3600)
    found = access.look_up(
        organization=project.organization.slug,
        user=member,
        read=read,
        list_projects=True,
        now=timezone.now(),
    )
    cells = tsdb.StatsRangeQuery.cells(found.counts or [])
    assert cells == tsdb.get_stats_by_project([project, other], read)
    assert len(cells) == 6 and cells[(other.pk, 1, hour + 3600)] == 3
    assert sorted(found.project_ids) == sorted([project.pk, other.pk])


@pytest.mark.parametrize(
    ("ids", "read"),
    [("mine", True), ("with a foreign one", False), ("with one that does not exist", False)],
)
def test_require_projects_reads_counts_only_when_every_id_is_the_organizations(
    project: Project, member: Any, ids: str, read: bool
) -> None:
    hour = int(time.time()) // 3600 * 3600 - 3600
    tsdb.incr(project, "received", timestamp=hour, count=4)
    wanted = {
        "mine": [project.pk],
        "with a foreign one": [project.pk, ProjectFactory().pk],
        "with one that does not exist": [project.pk, 2**62],
    }[ids]
    found = access.look_up(
        organization=project.organization.slug,
        user=member,
        read=tsdb.plan_stats_range(["received"], hour, hour, rollup=3600),
        project_ids=wanted,
        require_projects=len(wanted),
        list_projects=True,
        now=timezone.now(),
    )
    assert found.project_ids == [project.pk]
    assert (found.counts == [(project.pk, hour, 4, 0)]) is read
    assert found.counts is not None and (len(found.counts) == 1) is read
