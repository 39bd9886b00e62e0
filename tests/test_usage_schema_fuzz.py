"""Fuzz ``stats_v2`` against Sentry's official OpenAPI description, on a live server.

Schemathesis generates requests from ``tests/spec/sentry-openapi-stats-v2.json``
(the ``listOrganizationStatsV2`` operation as Sentry publishes it), valid ones
and ones breaking it, aimed at an unknown organization, at the real one, and
at the real one with a range that is always valid (``statsPeriod`` wins over
``start``/``end``) and every project, so that many get past the 400s to real
data. Sentry's
description lists only 200, 401 and 404; this site also answers 400 (a bad
parameter, ``{"detail": ...}``) and 403 (a project of another organization),
as its own schema documents, so those two are added to the official
description before the run. Otherwise every answer must conform: status,
content type, headers, and the 200 body against Sentry's schema; none may be
a server error. ``positive_data_acceptance`` stays off (a request the
description allows can still be a 400: ``start`` after ``end``, too many
intervals, an unparseable ``statsPeriod``), and so does
``negative_data_rejection`` (``groupBy`` is optional here, as it is in
Sentry's code, and empty parameters count as absent).
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
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from project_stats import tsdb

from .factories import ApiTokenFactory, OrganizationMemberFactory, ProjectFactory

SENTRY_SCHEMA = Path(__file__).resolve().parent / "spec" / "sentry-openapi-stats-v2.json"
PATH = "/api/0/organizations/{organization_id_or_slug}/stats_v2/"
# Examples per strategy and generation mode: 3 strategies x 2 modes x 120.
EXAMPLES = 120
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    }
}


def official_schema_with_our_errors() -> dict[str, Any]:
    schema = copy.deepcopy(json.loads(SENTRY_SCHEMA.read_text()))
    responses = schema["paths"][PATH]["get"]["responses"]
    assert set(responses) == {"200", "401", "404"}  # what Sentry documents
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

    schema = schemathesis.openapi.from_dict(official_schema_with_our_errors())
    operation = schema[PATH]["GET"]
    headers = {"Authorization": f"Bearer {token.plaintext}"}  # type: ignore[attr-defined]
    statuses: Counter[int] = Counter()
    sent: Counter[str] = Counter()
    real = {"organization_id_or_slug": "acme"}

    def fuzz(strategy: st.SearchStrategy[Any], label: str) -> None:
        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=live_server.url, headers=headers, timeout=30)
            sent[label] += 1
            statuses[response.status_code] += 1
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
    # The run reached real data as well as the 4xx paths.
    assert statuses[200] >= 60 and statuses[400] >= 50 and statuses[404] >= 10, statuses
    assert not any(status >= 500 for status in statuses), statuses
