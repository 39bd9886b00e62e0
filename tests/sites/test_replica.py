"""A site whose router reads from ``replica`` and writes to ``default``.

The two databases hold different data on purpose, so each answer shows
which database was read; the statements each connection ran show the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connections
from django.db.models import Model, Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from project_stats import tsdb
from project_stats.constants import STAT_CODES
from project_stats.models import (
    ApiToken,
    EventCount,
    Organization,
    OrganizationMember,
    Project,
    ProjectRedirect,
)
from project_stats.tsdb.rollups import bucket_start, epoch_to_datetime

from ..conftest import bearer
from ..factories import ApiTokenFactory, OrganizationMemberFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db(databases=["default", "replica"])

HOUR = 3600
PRIMARY_COUNT = 1000
REPLICA_COUNT = 7


def replicate(*models: type[Model]) -> None:
    """Copy the rows of ``models`` the replica lacks from the primary, keys and all."""
    for model in models:
        present = model._base_manager.using("replica").values_list("pk", flat=True)
        rows = model._base_manager.using("default").exclude(pk__in=list(present)).order_by("pk")
        model._base_manager.using("replica").bulk_create(list(rows))


def replica_counts(project: Project, *, rollup: int, epoch: int, count: int) -> None:
    EventCount.objects.using("replica").create(
        project_id=project.pk,
        stat=STAT_CODES["received"],
        environment="",
        rollup=rollup,
        timestamp=epoch_to_datetime(epoch),
        count=count,
    )


def total(alias: str, **filters: Any) -> int:
    return EventCount.objects.using(alias).filter(**filters).aggregate(n=Sum("count"))["n"] or 0


@dataclass
class Statements:
    primary: list[str]
    replica: list[str]

    def kinds(self, alias: str) -> set[str]:
        """What the statements do: a ``WITH ... SELECT`` that writes nothing is a SELECT."""
        found = set()
        for sql in getattr(self, alias):
            kind = sql.split(None, 1)[0].upper()
            writes = re.search(r"\b(INSERT|UPDATE|DELETE)\b", sql, flags=re.IGNORECASE)
            found.add("SELECT" if kind == "WITH" and writes is None else kind)
        return found


@contextmanager
def statements() -> Iterator[Statements]:
    """The SQL each database received inside the block."""
    with (
        CaptureQueriesContext(connections["default"]) as primary,
        CaptureQueriesContext(connections["replica"]) as replica,
    ):
        found = Statements([], [])
        yield found
    found.primary = [q["sql"] for q in primary.captured_queries]
    found.replica = [q["sql"] for q in replica.captured_queries]


@pytest.fixture
def site() -> dict[str, Any]:
    """A member with a token, the same on both databases; counts differ between them."""
    member = OrganizationMemberFactory()
    project = ProjectFactory(organization=member.organization)
    token = ApiTokenFactory(user=member.user, scopes=["project:read", "org:read"])
    replicate(get_user_model(), Organization, Project, OrganizationMember, ApiToken)
    hour = bucket_start(timezone.now(), HOUR) - HOUR
    tsdb.incr(project, "received", timestamp=hour, count=PRIMARY_COUNT)
    replica_counts(project, rollup=HOUR, epoch=hour, count=REPLICA_COUNT)
    return {"project": project, "token": token, "hour": hour}


def test_the_databases_are_separate(site: dict[str, Any]) -> None:
    assert (
        connections["default"].settings_dict["NAME"]
        != (connections["replica"].settings_dict["NAME"])
    )
    assert total("default", rollup=HOUR) == PRIMARY_COUNT
    assert total("replica", rollup=HOUR) == REPLICA_COUNT


def test_project_stats_read_the_replica(client: Client, site: dict[str, Any]) -> None:
    project = site["project"]
    url = reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": project.organization.slug,
            "project_id_or_slug": project.slug,
        },
    )
    with statements() as sql:
        response = client.get(url, **bearer(site["token"]))
    assert response.status_code == 200, response.content
    assert dict(response.json())[site["hour"]] == REPLICA_COUNT
    # The token, the project with the membership and the counts: all reads.
    assert sql.replica and sql.kinds("replica") == {"SELECT"}
    # Only the token's last use is written, to the primary.
    assert sql.kinds("primary") == {"UPDATE"} and len(sql.primary) == 1
    assert ApiToken.objects.using("default").get().last_used is not None
    assert ApiToken.objects.using("replica").get().last_used is None


def test_environments_are_looked_up_on_the_replica(client: Client, site: dict[str, Any]) -> None:
    project = site["project"]
    EventCount.objects.using("replica").create(
        project_id=project.pk,
        stat=STAT_CODES["generated"],
        environment="only-on-the-replica",
        rollup=HOUR,
        timestamp=epoch_to_datetime(site["hour"]),
        count=11,
    )
    url = reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": project.organization.slug,
            "project_id_or_slug": project.slug,
        },
    )
    params = {"stat": "generated", "environment": "only-on-the-replica"}
    with statements() as sql:
        response = client.get(url, params, **bearer(site["token"]))
    assert response.status_code == 200, response.content
    assert dict(response.json())[site["hour"]] == 11
    assert sql.kinds("replica") == {"SELECT"} and sql.kinds("primary") <= {"UPDATE"}


def test_organization_endpoints_read_the_replica(client: Client, site: dict[str, Any]) -> None:
    organization = site["project"].organization
    ProjectFactory(organization=organization, slug="only-on-the-primary")
    Project.objects.using("replica").bulk_create(
        [Project(organization_id=organization.pk, slug="only-on-the-replica", name="R")]
    )
    base = f"/api/0/organizations/{organization.slug}"
    with statements() as sql:
        listed = client.get(f"{base}/projects/", **bearer(site["token"]))
        summed = client.get(f"{base}/stats/", **bearer(site["token"]))
        by_project = client.get(f"{base}/stats/", {"group": "project"}, **bearer(site["token"]))
        v2 = client.get(
            f"{base}/stats_v2/",
            {
                "field": "sum(quantity)",
                "category": "error",
                "start": site["hour"],
                "end": site["hour"] + 3600,
            },
            **bearer(site["token"]),
        )
        summary = client.get(
            f"{base}/stats-summary/",
            {"field": "sum(quantity)", "start": site["hour"], "end": site["hour"] + 3599},
            **bearer(site["token"]),
        )
    assert [row["slug"] for row in listed.json()] == ["only-on-the-replica", site["project"].slug]
    assert dict(summed.json())[site["hour"]] == REPLICA_COUNT
    assert dict(by_project.json()[str(site["project"].pk)])[site["hour"]] == REPLICA_COUNT
    assert v2.status_code == 200, v2.content
    assert v2.json()["groups"][0]["totals"] == {"sum(quantity)": REPLICA_COUNT}
    assert summary.status_code == 200, summary.content
    projects = summary.json()["projects"]
    assert sorted(p["slug"] for p in projects) == ["only-on-the-replica", site["project"].slug]
    assert sum(p["stats"][0]["totals"]["sum(quantity)"] for p in projects) == REPLICA_COUNT
    assert sql.kinds("replica") == {"SELECT"}
    assert sql.kinds("primary") <= {"UPDATE"}


def test_the_admin_chart_reads_the_replica(admin_user: Any, site: dict[str, Any]) -> None:
    client = Client()
    client.force_login(admin_user)
    replicate(get_user_model(), Session)  # what the site's replication would do
    response = client.get(reverse("admin:project_stats_project_change", args=[site["project"].pk]))
    assert response.status_code == 200
    assert f'data-total="{REPLICA_COUNT}"' in response.content.decode()


def test_tsdb_writes_go_to_the_primary_only(site: dict[str, Any]) -> None:
    project, hour = site["project"], site["hour"]
    now = timezone.now()
    with statements() as sql:
        tsdb.incr(project, "received", timestamp=hour, count=1)
        tsdb.incr_many([(project, "received", hour, 2), (project, "rejected", hour, 3)])
        tsdb.backfill(now=now)
        tsdb.prune(now=now + timedelta(days=365))
    assert sql.replica == []
    assert sql.primary
    # The prune a year ahead emptied the primary; the replica kept its row.
    assert total("default") == 0
    assert total("replica") == REPLICA_COUNT


def test_tsdb_delete_goes_to_the_primary_only(site: dict[str, Any]) -> None:
    with statements() as sql:
        deleted = tsdb.delete([site["project"]])
    assert deleted > 0 and total("default") == 0
    assert sql.replica == [] and total("replica") == REPLICA_COUNT


def test_backfill_writes_the_primary_from_the_primary(site: dict[str, Any]) -> None:
    project, hour = site["project"], site["hour"]
    # 10-second counts on both: the primary's (with the 1000 of ``site``) must be used.
    replica_counts(project, rollup=10, epoch=hour + 60, count=50)
    tsdb.incr(project, "received", timestamp=hour + 60, count=5, rollups=[10])
    with statements() as sql:
        (result,) = tsdb.backfill([HOUR], since=hour, until=hour + HOUR)
    assert sql.replica == []
    assert (result.examined, result.written) == (1, 1)
    assert total("default", rollup=HOUR) == PRIMARY_COUNT + 5
    assert total("replica", rollup=HOUR) == REPLICA_COUNT


def test_dry_runs_only_read_and_read_the_replica(site: dict[str, Any]) -> None:
    project, hour = site["project"], site["hour"]
    replica_counts(project, rollup=10, epoch=hour + 60, count=50)
    with statements() as sql:
        (result,) = tsdb.backfill([HOUR], since=hour, until=hour + HOUR, dry_run=True)
        expired = tsdb.prune(dry_run=True, now=timezone.now() + timedelta(days=365))
    assert sql.primary == []
    assert sql.kinds("replica") <= {"SELECT", "WITH"}
    # The replica's 50 beats its stored 7; the primary would have nothing to change.
    assert (result.examined, result.written) == (1, 1)
    assert expired == {10: 1, HOUR: 1, 86400: 0}
    assert total("default", rollup=HOUR) == PRIMARY_COUNT
    assert total("replica", rollup=HOUR) == REPLICA_COUNT


def test_issued_tokens_are_written_to_the_primary(db: None) -> None:
    user = UserFactory()
    replicate(get_user_model())  # the command looks the user up where reads go
    token, _ = ApiToken.objects.issue(user, name="issued")
    call_command("project_stats_token", user.get_username(), "--name", "command", stdout=None)
    names = set(ApiToken.objects.using("default").values_list("name", flat=True))
    assert names == {"issued", "command"}
    assert not ApiToken.objects.using("replica").exists()
    assert token._state.db == "default"


def test_a_rename_leaves_its_redirect_on_the_primary(db: None) -> None:
    # Not replicated (yet): the previous slug must come from the primary.
    project = ProjectFactory(slug="before")
    project.slug = "after"
    project.save()
    redirect = ProjectRedirect.objects.using("default").get()
    assert (redirect.redirect_slug, redirect.project_id) == ("before", project.pk)
    assert not ProjectRedirect.objects.using("replica").exists()
