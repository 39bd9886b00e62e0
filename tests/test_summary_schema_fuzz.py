"""Fuzz ``stats-summary`` against Sentry's official OpenAPI description, on a live server.

As ``test_usage_schema_fuzz.py`` does for ``stats_v2``: Schemathesis
generates requests from ``tests/spec/sentry-openapi-stats-summary.json`` (the
``getOrganizationStatsSummary`` operation as Sentry publishes it), valid ones
and ones breaking it, aimed at an unknown organization, at the real one, and
at the real one with a range that is always valid and every project. Sentry's
description lists only 200 (JSON), 401 and 404; this site also answers 400 (a
bad parameter) and 403 (a project of another organization) as
``{"detail": ...}``, and with ``download=true`` a 200 in ``text/csv`` (the
description's own ``download`` parameter asks for a CSV file), so those are
added to the official description before the run. Otherwise every answer
must conform: status, content type, headers, the JSON body against Sentry's
schema; none may be a server error. ``positive_data_acceptance`` and
``negative_data_rejection`` stay off for the reasons the ``stats_v2`` fuzz
test gives.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from project_stats import tsdb

from .factories import ApiTokenFactory, OrganizationMemberFactory, ProjectFactory
from .test_usage_schema_fuzz import CHECKS, ERROR

SENTRY_SCHEMA = Path(__file__).resolve().parent / "spec" / "sentry-openapi-stats-summary.json"
PATH = "/api/0/organizations/{organization_id_or_slug}/stats-summary/"
# Examples per strategy and generation mode: 3 strategies x 2 modes x 120.
EXAMPLES = 120


def official_schema_with_ours() -> dict[str, Any]:
    schema = copy.deepcopy(json.loads(SENTRY_SCHEMA.read_text()))
    responses = schema["paths"][PATH]["get"]["responses"]
    assert set(responses) == {"200", "401", "404"}  # what Sentry documents
    assert set(responses["200"]["content"]) == {"application/json"}
    responses["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    responses["400"] = {"description": "A bad query parameter", **ERROR}
    responses["403"] = {"description": "A project of another organization", **ERROR}
    return schema


@pytest.mark.django_db(transaction=True)
def test_sentrys_schema_gets_documented_answers_and_never_a_server_error(
    live_server: Any,
) -> None:
    project = ProjectFactory(organization__slug="acme", slug="web")
    ProjectFactory(organization=project.organization, slug="api")
    ProjectFactory(slug="elsewhere")
    member = OrganizationMemberFactory(organization=project.organization)
    token = ApiTokenFactory(user=member.user, scopes=["org:read"])
    now = time.time()
    for minutes in range(0, 1440, 17):
        at = now - minutes * 60
        tsdb.incr(project, "received", timestamp=at, count=minutes % 7 + 3)
        tsdb.incr(project, "rejected", timestamp=at, count=minutes % 2)
        tsdb.incr(project, "blacklisted", timestamp=at, count=2)
        tsdb.incr(project, "web-crawlers", timestamp=at, count=1)

    schema = schemathesis.openapi.from_dict(official_schema_with_ours())
    operation = schema[PATH]["GET"]
    headers = {"Authorization": f"Bearer {token.plaintext}"}  # type: ignore[attr-defined]
    statuses: Counter[int] = Counter()
    types: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    real = {"organization_id_or_slug": "acme"}

    def fuzz(strategy: st.SearchStrategy[Any], label: str) -> None:
        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=live_server.url, headers=headers, timeout=30)
            sent[label] += 1
            statuses[response.status_code] += 1
            if response.status_code == 200:
                [content_type] = response.headers["content-type"]
                types[content_type.split(";")[0]] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        run()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        fuzz(operation.as_strategy(generation_mode=mode), f"{mode.value} any organization")
        fuzz(
            operation.as_strategy(generation_mode=mode, path_parameters=real),
            f"{mode.value} acme",
        )
        fuzz(
            operation.as_strategy(
                generation_mode=mode,
                path_parameters=real,
                # Generated project ids are mostly not numbers (a 400): every project.
                query={"statsPeriod": "1d", "interval": "1h", "project": "-1"},
            ),
            f"{mode.value} acme, last day, every project",
        )

    assert len(sent) == 6, sent
    assert sum(sent.values()) >= 500, sent
    # The run reached real data, as JSON and as CSV, as well as the 4xx paths.
    assert statuses[200] >= 60 and statuses[400] >= 50 and statuses[404] >= 10, statuses
    assert types["application/json"] >= 10 and types["text/csv"] >= 10, types
    assert not any(status >= 500 for status in statuses), statuses
