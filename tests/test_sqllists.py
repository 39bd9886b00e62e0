"""``sqllists``: a list of values as one bound parameter, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from project_stats import tsdb
from project_stats.models import EventCount, Project
from project_stats.sqllists import AnyOf, any_of

from .factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_values_match_as_in_does(project: Project, other_project: Project) -> None:
    projects = Project.objects.all()
    assert list(projects.filter(AnyOf(F("pk"), [project.pk]))) == [project]
    assert set(projects.filter(AnyOf(F("pk"), [project.pk, other_project.pk, 0]))) == {
        project,
        other_project,
    }
    assert list(projects.filter(AnyOf(F("pk"), []))) == []
    assert set(projects.exclude(AnyOf(F("pk"), []))) == {project, other_project}
    assert list(projects.exclude(AnyOf(F("pk"), [project.pk]))) == [other_project]


def test_integers_past_64_bits_match_nothing_instead_of_failing(project: Project) -> None:
    found = Project.objects.filter(AnyOf(F("pk"), [2**63, -(2**63) - 1, 10**30, project.pk]))
    assert list(found) == [project]


@pytest.mark.parametrize(
    "slug", ["a,b", 'quote"d', "it's", "{braces}", "back\\slash", "NULL", "ünï", " spaced "]
)
def test_text_is_bound_not_parsed(slug: str) -> None:
    """Array and JSON syntax in a value is the value's own."""
    project = ProjectFactory(slug=slug)
    ProjectFactory(slug="a")
    assert list(Project.objects.filter(AnyOf(F("slug"), [slug]))) == [project]


def test_datetimes_and_foreign_keys(project: Project) -> None:
    when = datetime(2024, 3, 5, 13, 0, tzinfo=UTC)
    tsdb.incr(project, "received", count=2, timestamp=when, rollups=[3600])
    rows = EventCount.objects.filter(
        AnyOf(F("project_id"), [project.pk]), AnyOf(F("timestamp"), [when])
    )
    assert [row.count for row in rows] == [2]


def test_one_parameter_and_one_text_for_any_length(project: Project) -> None:
    field = Project._meta.pk
    assert field is not None
    texts = set()
    for count in (0, 1, 5, 40_000):
        sql, params = any_of(connection, "id", field, range(1, count + 1))
        texts.add(sql)
        # MariaDB: a plain IN list (see sqllists), interpolated by mysqlclient.
        assert len(params) == (count if connection.vendor == "mysql" else 1)
    assert len(texts) == (4 if connection.vendor == "mysql" else 1)
    ids = [project.pk, *range(10**12, 10**12 + 40_000)]
    with CaptureQueriesContext(connection) as queries:
        assert Project.objects.filter(AnyOf(F("pk"), ids)).count() == 1
    [query] = queries.captured_queries
    marker = {"postgresql": "= ANY(CAST(", "mysql": "IN ("}.get(connection.vendor, "json_each(")
    assert query["sql"].count(marker) == 1
