"""``stats_v2`` through Sentry's generated TypeScript client, on Node.js, against a live demo site.

The client is the npm package ``@sentry/api`` (pinned in
``tests/sentry_api_client/package-lock.json``, installed there by ``make
node-client``, which ``make test`` runs). Its operation for this endpoint is
exported as ``retrieveEventCountsForAnOrganizationV2`` (the OpenAPI operation
``listOrganizationStatsV2``). The test loads the demo data, asks as Grafana
does (naive ``start``/``end``, ``interval``, ``category=error``,
``groupBy=outcome&groupBy=reason``) and compares the answer with the demo's
counts read through ``tsdb``, outcomes derived here independently.

Skipped with the reason when ``node`` is missing, unless ``REQUIRE_NODE=1``
(CI), which fails instead; a missing ``npm`` install always fails, naming
the target that makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from project_stats import demo, tsdb
from project_stats.constants import FILTER_STATS
from project_stats.models import ApiToken, Organization

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("demo_site")]

CLIENT_DIR = Path(__file__).resolve().parent / "sentry_api_client"
SCRIPT = CLIENT_DIR / "stats_v2.mjs"
HOUR = 3600


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("REQUIRE_NODE") == "1":
            pytest.fail(
                "the @sentry/api client test is required (REQUIRE_NODE=1) but node is missing"
            )
        pytest.skip("the @sentry/api client test needs Node.js (node not found)")
    if not (CLIENT_DIR / "node_modules" / "@sentry" / "api" / "package.json").exists():
        pytest.fail(f"@sentry/api is not installed in {CLIENT_DIR}: run `make node-client`")
    return found


def call(node: str, base_url: str, token: str, organization: str, query: dict[str, Any]) -> Any:
    argument = json.dumps(
        {"baseUrl": base_url, "token": token, "organization": organization, "query": query}
    )
    done = subprocess.run(  # noqa: S603 - our script, our arguments
        [node, str(SCRIPT), argument],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def expected_groups(start: int, end: int) -> list[dict[str, Any]]:
    """The demo's outcomes per hour, from ``tsdb.get_range`` of each stat and project."""
    projects = list(
        Organization.objects.get(slug=demo.ORGANIZATION_SLUG).projects.values_list("pk", flat=True)
    )
    last = end - HOUR
    groups: defaultdict[tuple[str, str], list[int]] = defaultdict(
        lambda: [0] * ((end - start) // HOUR)
    )
    for pk in projects:
        series = {
            stat: [n for _, n in tsdb.get_range(pk, stat, start, last, rollup=HOUR)]
            for stat in ("received", "rejected", "blacklisted", *FILTER_STATS)
        }
        for i in range((end - start) // HOUR):
            filters = {name: series[name][i] for name in FILTER_STATS}
            explained = sum(filters.values())
            filtered = max(series["blacklisted"][i], explained)
            cells = {("rate_limited", "none"): series["rejected"][i]}
            cells.update({("filtered", name): n for name, n in filters.items()})
            cells[("filtered", "none")] = series["blacklisted"][i] - explained
            cells[("accepted", "none")] = series["received"][i] - series["rejected"][i] - filtered
            for key, n in cells.items():
                groups[key][i] += max(0, n)
    return [
        {
            "by": {"outcome": outcome, "reason": reason},
            "totals": {"sum(quantity)": sum(values)},
            "series": {"sum(quantity)": values},
        }
        for (outcome, reason), values in sorted(groups.items())
        if any(values)
    ]


@pytest.mark.django_db(transaction=True)
def test_sentrys_generated_client_reads_the_demo(node: str, live_server: Any) -> None:
    now = timezone.now()
    demo.load(now=now, days=2, password="client-test")  # noqa: S106
    user = get_user_model()._default_manager.get(**{get_user_model().USERNAME_FIELD: demo.USERNAME})
    _, token = ApiToken.objects.issue(user, name="client", scopes=["org:read"])
    end = int(now.timestamp()) // HOUR * HOUR
    start = end - 24 * HOUR

    def naive(epoch: int) -> str:  # Grafana's form: no offset, meaning UTC
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    result = call(
        node,
        live_server.url,
        token,
        demo.ORGANIZATION_SLUG,
        {
            "start": naive(start),
            "end": naive(end),
            "interval": "1h",
            "category": "error",
            "field": "sum(quantity)",
            "groupBy": ["outcome", "reason"],
        },
    )
    assert result["status"] == 200, result
    assert "groupBy=outcome&groupBy=reason" in result["url"]
    answer = result["data"]
    assert answer["start"] == naive(start) + "Z"
    assert answer["end"] == naive(end) + "Z"
    assert len(answer["intervals"]) == 24
    groups = expected_groups(start, end)
    assert {g["by"]["outcome"] for g in groups} == {"accepted", "filtered", "rate_limited"}
    assert answer["groups"] == groups

    # By project id, over the last day; the organization by id.
    organization = Organization.objects.get(slug=demo.ORGANIZATION_SLUG)
    by_project = call(
        node,
        live_server.url,
        token,
        str(organization.pk),
        {"statsPeriod": "1d", "field": "sum(times_seen)", "groupBy": ["project", "category"]},
    )
    assert by_project["status"] == 200, by_project
    ids = sorted(organization.projects.values_list("pk", flat=True))
    assert [(g["by"]["project"], g["by"]["category"]) for g in by_project["data"]["groups"]] == [
        (pk, "error") for pk in ids
    ]

    # Errors come back as the client's error value.
    bad = call(node, live_server.url, token, demo.ORGANIZATION_SLUG, {"field": "count()"})
    assert (bad["status"], bad["error"]) == (400, {"detail": 'Invalid field: "count()"'})
    denied = call(
        node, live_server.url, "not-a-token", demo.ORGANIZATION_SLUG, {"field": "sum(quantity)"}
    )
    assert denied["status"] == 401
