"""``stats-summary`` through Sentry's generated TypeScript client, against a live demo site.

The client is the npm package ``@sentry/api`` (see ``test_usage_client.py``);
its operation for this endpoint is exported as
``retrieveAnOrganization_sEventsCountByProject`` (the OpenAPI operation
``getOrganizationStatsSummary``). The test loads the demo data, asks for a
day of hours and compares every project's outcomes with totals computed here
from the stored rows (``EventCount`` summed per project, stat and hour, the
outcomes derived independently), then downloads the same as CSV.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from project_stats import demo
from project_stats.constants import FILTER_STATS, STAT_CODES
from project_stats.models import ApiToken, EventCount, Organization

from .test_usage_client import node  # noqa: F401 - the fixture

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("demo_site")]

SCRIPT = Path(__file__).resolve().parent / "sentry_api_client" / "stats_summary.mjs"
HOUR = 3600
OUTCOMES = (
    "accepted",
    "filtered",
    "rate_limited",
    "invalid",
    "abuse",
    "client_discard",
    "cardinality_limited",
)


def call(
    executable: str, base_url: str, token: str, organization: str, query: dict[str, Any]
) -> Any:
    argument = json.dumps(
        {"baseUrl": base_url, "token": token, "organization": organization, "query": query}
    )
    done = subprocess.run(  # noqa: S603 - our script, our arguments
        [executable, str(SCRIPT), argument],
        cwd=SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def expected_outcomes(start: int, end: int) -> dict[int, dict[str, int]]:
    """Each demo project's outcomes over ``[start, end)`` from the stored hourly rows."""
    names = {
        STAT_CODES[name]: name for name in ("received", "rejected", "blacklisted", *FILTER_STATS)
    }
    cells: defaultdict[tuple[int, str, int], int] = defaultdict(int)
    rows = EventCount.objects.filter(
        project__organization__slug=demo.ORGANIZATION_SLUG,
        environment="",
        rollup=HOUR,
        timestamp__gte=datetime.fromtimestamp(start, UTC),
        timestamp__lt=datetime.fromtimestamp(end, UTC),
        stat__in=list(names),
    ).values_list("project_id", "stat", "timestamp", "count")
    for project_id, stat, timestamp, count in rows:
        cells[(project_id, names[stat], int(timestamp.timestamp()))] += count
    projects = Organization.objects.get(slug=demo.ORGANIZATION_SLUG).projects.values_list(
        "pk", flat=True
    )
    totals = {pk: dict.fromkeys(OUTCOMES, 0) for pk in projects}
    for pk in totals:
        for hour in range(start, end, HOUR):
            received, rejected, blacklisted = (
                cells[(pk, name, hour)] for name in ("received", "rejected", "blacklisted")
            )
            explained = sum(cells[(pk, name, hour)] for name in FILTER_STATS)
            filtered = max(blacklisted, explained)
            totals[pk]["rate_limited"] += rejected
            totals[pk]["filtered"] += filtered
            totals[pk]["accepted"] += max(0, received - rejected - filtered)
    return totals


@pytest.mark.django_db(transaction=True)
def test_sentrys_generated_client_reads_the_summary(node: str, live_server: Any) -> None:  # noqa: F811
    now = timezone.now()
    demo.load(now=now, days=2, password="client-test")  # noqa: S106
    user = get_user_model()._default_manager.get(**{get_user_model().USERNAME_FIELD: demo.USERNAME})
    _, token = ApiToken.objects.issue(user, name="client", scopes=["org:read"])
    end = int(now.timestamp()) // HOUR * HOUR
    start = end - 24 * HOUR

    def naive(epoch: int) -> str:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    # end is inclusive: the last second of the last hour.
    query = {
        "start": naive(start),
        "end": naive(end - 1),
        "interval": "1h",
        "field": "sum(quantity)",
    }
    result = call(node, live_server.url, token, demo.ORGANIZATION_SLUG, query)
    assert result["status"] == 200, result
    answer = result["data"]
    assert (answer["start"], answer["end"]) == (naive(start) + "Z", naive(end) + "Z")
    expected = expected_outcomes(start, end)
    assert [int(p["id"]) for p in answer["projects"]] == sorted(expected)
    slugs = dict(
        Organization.objects.get(slug=demo.ORGANIZATION_SLUG).projects.values_list("pk", "slug")
    )
    assert [p["slug"] for p in answer["projects"]] == [slugs[pk] for pk in sorted(expected)]
    assert len(answer["projects"]) == len(demo.PROJECTS)
    for project in answer["projects"]:
        [stats] = project["stats"]
        outcomes = expected[int(project["id"])]
        dropped = sum(n for name, n in outcomes.items() if name != "accepted")
        assert stats == {
            "category": "error",
            "outcomes": outcomes,
            "totals": {"dropped": dropped, "sum(quantity)": outcomes["accepted"] + dropped},
        }
        assert outcomes["accepted"] > 0 and outcomes["filtered"] > 0

    # The same as CSV; the organization by id, every project with -1.
    organization = Organization.objects.get(slug=demo.ORGANIZATION_SLUG)
    download = call(
        node,
        live_server.url,
        token,
        str(organization.pk),
        {**query, "download": True, "project": [-1]},
    )
    assert download["status"] == 200, download
    assert download["contentType"].startswith("text/csv")
    assert download["disposition"] == 'attachment; filename="stats_summary.csv"'
    assert "download=true" in download["url"] and "project=-1" in download["url"]
    rows = list(csv.DictReader(io.StringIO(download["data"], newline="")))
    assert [row["project_slug"] for row in rows] == [p["slug"] for p in answer["projects"]]
    for row, project in zip(rows, answer["projects"], strict=True):
        stats = project["stats"][0]
        assert int(row["project_id"]) == int(project["id"])
        assert {name: int(row[f"{name}_errors"]) for name in OUTCOMES} == stats["outcomes"]
        assert int(row["dropped_errors"]) == stats["totals"]["dropped"]
        assert int(row["total_errors"]) == stats["totals"]["sum(quantity)"]

    # Errors come back as the client's error value.
    bad = call(node, live_server.url, token, demo.ORGANIZATION_SLUG, {"field": "count()"})
    assert (bad["status"], bad["error"]) == (400, {"detail": 'Invalid field: "count()"'})
    denied = call(node, live_server.url, "not-a-token", demo.ORGANIZATION_SLUG, query)
    assert denied["status"] == 401
