"""Fuzz the API against its own OpenAPI schema, on a live server, with a member's token.

Schemathesis generates requests from the schema served at ``/api/0/schema/``:
valid ones (positive) and ones breaking the schema (negative), half of them
aimed at the real organization and project so that they get past the 404.
Every response must be documented (status, content type, headers, body
schema) and none may be a server error. Two checks stay off, on purpose:
``positive_data_acceptance`` (a request the schema allows can still be a 400:
``since`` after ``until``, too many points) and ``negative_data_rejection``
(the API reads ``since``/``until`` leniently as Python's ``float`` does, and
an empty parameter means an absent one, as Sentry's does).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
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
from .http import http_get

# Examples per operation and generation mode: 5 operations x 2 modes x 180.
EXAMPLES = 180
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.django_db(transaction=True)
def test_generated_requests_get_documented_answers_and_never_a_server_error(
    live_server: Any,
) -> None:
    project = ProjectFactory(organization__slug="acme", slug="web")
    ProjectFactory(organization=project.organization, slug="api")
    member = OrganizationMemberFactory(organization=project.organization)
    token = ApiTokenFactory(user=member.user, scopes=["org:read", "project:read"])
    now = datetime.now(UTC)
    for minutes in range(0, 600, 7):
        at = now - timedelta(minutes=minutes)
        tsdb.incr(project, "received", timestamp=at, count=minutes % 5 + 1)
        tsdb.incr(project, "generated", timestamp=at, environment="production")

    served = http_get(live_server.url + "/api/0/schema/?format=json")
    assert served.status == 200
    schema = schemathesis.openapi.from_dict(json.loads(served.body))
    real = {"organization_id_or_slug": "acme", "project_id_or_slug": "web"}
    headers = {"Authorization": f"Bearer {token.plaintext}"}  # type: ignore[attr-defined]
    sent: Counter[tuple[str, str]] = Counter()
    statuses: Counter[int] = Counter()

    def fuzz(strategy: st.SearchStrategy[Any], label: tuple[str, str]) -> None:
        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=live_server.url, headers=headers, timeout=30)
            sent[label] += 1
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(("/api/0/projects/", "/api/0/organizations/")):
            continue  # the schema view itself is drf-spectacular's
        names = {p.name for p in operation.path_parameters}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = st.one_of(
                operation.as_strategy(generation_mode=mode),
                operation.as_strategy(
                    generation_mode=mode,
                    path_parameters={k: v for k, v in real.items() if k in names},
                ),
            )
            fuzz(strategy, (operation.label, mode.value))

    assert len(sent) == 10, sent
    assert sum(sent.values()) >= 1000, sent
    # The run reached real data as well as the 4xx paths.
    assert statuses[200] >= 100 and statuses[400] >= 100, statuses
    assert not any(status >= 500 for status in statuses), statuses
