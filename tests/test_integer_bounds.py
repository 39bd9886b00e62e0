"""Every integer parameter of every endpoint is bounded: a 4xx with a JSON detail, never a 500.

Python's ``int()`` refuses text of more than 4,300 digits (a ValueError, which
was a 500 before authentication, so anonymous requests could cause it), and
a number that parses may still be past the 64-bit columns it is compared with
(2**63 is one more than the largest id). Each parameter gets both, with a
token and without one.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from project_stats import usage
from project_stats.models import ApiToken, Project

from .conftest import bearer
from .factories import OrganizationMemberFactory, ProjectFactory

pytestmark = pytest.mark.django_db

HUGE = "9" * 5000  # past int()'s 4,300 digits
PAST_BIGINT = str(2**63)  # parses, but no 64-bit column holds it
NOT_FOUND = {"detail": "The requested resource does not exist"}
NUMERIC = "{name} must be a numeric timestamp"


@pytest.fixture
def project(db: None) -> Project:
    return ProjectFactory(organization__slug="acme", slug="api")


@pytest.fixture
def token(project: Project) -> ApiToken:
    member = OrganizationMemberFactory(organization=project.organization)
    _, plaintext = ApiToken.objects.issue(member.user, scopes=["org:read", "project:read"])
    return plaintext  # type: ignore[return-value]


def project_stats(org: str = "acme", project: str = "api") -> str:
    return reverse("project_stats:project-stats", args=[org, project])


def organization(name: str, org: str = "acme") -> str:
    return reverse(f"project_stats:organization-{name}", args=[org])


USAGE = {"field": "sum(quantity)", "category": "error", "statsPeriod": "1d"}
# start/end count only without statsPeriod.
RANGE = {"field": "sum(quantity)", "category": "error"}
# (path, query, the answer with a token) for each integer parameter, with
# {value} standing for the huge or the too-large number. None: any 400.
CASES: list[tuple[str, Any, dict[str, str], Any]] = [
    # Path ids: no row can match.
    ("project org id", lambda v: project_stats(org=v), {}, (404, NOT_FOUND)),
    ("project id", lambda v: project_stats(project=v), {}, (404, NOT_FOUND)),
    ("projects org id", lambda v: organization("projects", v), {}, (404, NOT_FOUND)),
    ("stats org id", lambda v: organization("stats", v), {}, (404, NOT_FOUND)),
    ("stats_v2 org id", lambda v: organization("stats-v2", v), USAGE, (404, NOT_FOUND)),
    # Query parameters.
    ("since", lambda v: project_stats(), {"since": "{value}"}, (400, None)),
    ("until", lambda v: project_stats(), {"until": "{value}"}, (400, None)),
    ("resolution", lambda v: project_stats(), {"resolution": "{value}s"}, (400, None)),
    ("org since", lambda v: organization("stats"), {"since": "{value}"}, (400, None)),
    ("projectID", lambda v: organization("stats"), {"projectID": "{value}"}, (400, None)),
    ("per_page", lambda v: organization("projects"), {"per_page": "{value}"}, (400, None)),
    ("cursor", lambda v: organization("projects"), {"cursor": "0:{value}:0"}, (400, None)),
    (
        "project",
        lambda v: organization("stats-v2"),
        {**USAGE, "project": "{value}"},
        (400, {"detail": usage.INVALID_PROJECT}),
    ),
    (
        "negative project",
        lambda v: organization("stats-v2"),
        {**USAGE, "project": "-{value}"},
        (400, {"detail": usage.INVALID_PROJECT}),
    ),
    ("start", lambda v: organization("stats-v2"), {**RANGE, "start": "{value}", "end": "1"}, None),
    ("end", lambda v: organization("stats-v2"), {**RANGE, "start": "1", "end": "{value}"}, None),
    ("statsPeriod", lambda v: organization("stats-v2"), {**USAGE, "statsPeriod": "{value}"}, None),
    ("interval", lambda v: organization("stats-v2"), {**USAGE, "interval": "{value}h"}, None),
]


def assert_clear_4xx(response: Any) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize("value", [HUGE, PAST_BIGINT], ids=["5000 digits", "2**63"])
@pytest.mark.parametrize(("name", "path", "query", "answer"), CASES, ids=[c[0] for c in CASES])
def test_an_integer_too_long_or_too_large_is_a_4xx(
    client: Client,
    token: str,
    value: str,
    name: str,
    path: Any,
    query: dict[str, str],
    answer: tuple[int, Any] | None,
) -> None:
    url = path(value)
    params = {key: text.format(value=value) for key, text in query.items()}
    anonymous = client.get(url, params)
    assert_clear_4xx(anonymous)
    assert anonymous.status_code in (400, 401, 404)
    response = client.get(url, params, **bearer(token))
    body = assert_clear_4xx(response)
    status, detail = answer or (400, None)
    assert response.status_code == status, body
    if detail is not None:
        assert body == detail
    if name in ("since", "until", "org since") and value == HUGE:
        # The field's own message for text that is no time.
        assert body["detail"].startswith(NUMERIC.format(name=name.removeprefix("org ")))


@pytest.mark.parametrize("value", [HUGE, PAST_BIGINT], ids=["5000 digits", "2**63"])
def test_a_huge_id_is_a_404_for_a_session_user_too(
    client: Client, project: Project, value: str
) -> None:
    """The browsable API's session user takes the same path through ``id_or_slug``."""
    member = OrganizationMemberFactory(organization=project.organization)
    client.force_login(member.user)
    for url in (project_stats(org=value), project_stats(project=value)):
        response = client.get(url, HTTP_ACCEPT="application/json")
        assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_the_largest_id_and_a_padded_id_still_read_as_ids(
    client: Client, project: Project, token: str
) -> None:
    """Bounds, not new meanings: 2**63 - 1 is an id (of no row), ``007`` is 7."""
    response = client.get(project_stats(project=str(2**63 - 1)), **bearer(token))
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    padded = str(project.organization.pk).zfill(19)
    response = client.get(organization("stats", padded), **bearer(token))
    assert response.status_code == 200, response.content
    response = client.get(organization("stats-v2"), {**USAGE, "project": "-1"}, **bearer(token))
    assert response.status_code == 200, response.content
    response = client.get(organization("projects"), {"per_page": "0000000100"}, **bearer(token))
    assert response.status_code == 200, response.content
    response = client.get(organization("projects"), {"cursor": f"0:{'9' * 18}:0"}, **bearer(token))
    assert (response.status_code, response.json()) == (200, [])
