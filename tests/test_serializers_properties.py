"""Properties of the query parameters, through the real endpoints with a token.

Any text for any parameter answers 200 or a 4xx with a ``detail`` string,
never a 500; a valid range answers exactly ``floor((until - since) /
rollup) + 1`` points, or a 400 when that is more than ``MAX_POINTS``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from project_stats import tsdb
from project_stats.constants import STAT_CODES
from project_stats.models import ApiToken, Project

from .conftest import bearer

pytestmark = pytest.mark.django_db

MICROS = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_EPOCH_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_EPOCH_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
RESOLUTIONS = ["10s", "1h", "1d"]
ROLLUP_SECONDS = {"10s": 10, "1h": 3600, "1d": 86400}


# Up to here (year 2242) a double holds epoch seconds to the microsecond.
EXACT_FLOAT_US = 2**33 * MICROS


def epoch_text(micros: int) -> str:
    """Decimal epoch seconds, to the microsecond."""
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), MICROS)
    return f"{sign}{seconds}.{fraction:06d}" if fraction else f"{sign}{seconds}"


def iso_text(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


epoch_micros = st.integers(MIN_EPOCH_US, MAX_EPOCH_US)
times = st.one_of(
    epoch_micros.map(epoch_text),
    epoch_micros.map(iso_text),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.floats().map(repr),
    st.integers().map(str),
    st.sampled_from(["nan", "-inf", "1e309", "1_000", "0x10", "1700000000000", " 5 ", "\x00"]),
)
junk = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.-+:eETZ smhd_\x00"),
    times,
    st.sampled_from([*STAT_CODES, *RESOLUTIONS, "60m", "0s", "organization", "project"]),
)
now_s = int(datetime.now(UTC).timestamp())
near = st.integers(now_s - 100 * 86400, now_s + 3600)
# Values each parameter accepts: mixed with junk, so that junk in one
# parameter meets valid values in the others and reaches every check.
VALID = {
    "stat": st.sampled_from(sorted(STAT_CODES)),
    "since": st.one_of(near.map(str), near.map(lambda s: iso_text(s * MICROS))),
    "until": st.one_of(near.map(str), near.map(lambda s: iso_text(s * MICROS))),
    "resolution": st.sampled_from([*RESOLUTIONS, "60m", "24h"]),
    "environment": st.sampled_from(["production", "staging"]),
    "group": st.sampled_from(["organization", "project"]),
    "projectID": st.integers(-1, 10**6).map(str),
}
queries = st.fixed_dictionaries(
    {},
    optional={
        name: st.lists(st.one_of(valid, junk), min_size=1, max_size=2)
        for name, valid in VALID.items()
    },
)


@pytest.fixture
def urls(project: Project, other_project: Project) -> list[str]:
    org = project.organization.slug
    tsdb.incr(project, "generated", environment="production", timestamp=datetime.now(UTC))
    return [
        reverse("project_stats:project-stats", args=[org, project.slug]),
        reverse("project_stats:organization-stats", args=[org]),
    ]


def assert_clear_answer(response: Any, query: dict[str, list[str]]) -> None:
    body = response.json()
    if response.status_code == 200:
        assert isinstance(body, list | dict)
        return
    assert response.status_code in (400, 404), (response.status_code, body)
    assert isinstance(body, dict) and set(body) == {"detail"}
    assert isinstance(body["detail"], str) and body["detail"]
    if response.status_code == 404:  # only an environment never recorded
        assert "environment" in query


@settings(max_examples=200)
@given(query=queries)
@example(query={"environment": ["\x00"]})
@example(query={"until": [epoch_text(MIN_EPOCH_US)]})
@example(query={"since": [epoch_text(MAX_EPOCH_US)]})
@example(query={"until": [iso_text(MAX_EPOCH_US)], "resolution": ["10s"]})
@example(query={"since": ["0001-01-01T00:00:00+00:00"], "until": ["0001-01-01T00:00:00+00:00"]})
def test_any_text_in_any_parameter_is_a_clear_answer(
    client: Client, urls: list[str], member_token: ApiToken, query: dict[str, list[str]]
) -> None:
    for url in urls:
        response = client.get(url, query, **bearer(member_token))
        assert_clear_answer(response, query)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int, str]:
    """``(since, until)`` in epoch microseconds and a resolution; at most ~20,000 points."""
    resolution = draw(st.sampled_from(RESOLUTIONS))
    rollup_us = ROLLUP_SECONDS[resolution] * MICROS
    since = draw(st.integers(MIN_EPOCH_US, MAX_EPOCH_US - rollup_us * 20_000))
    span = draw(
        st.one_of(
            st.integers(0, rollup_us * 3),
            st.integers(0, rollup_us * 20_000),
            # Around whole buckets, where off-by-one errors live.
            st.builds(
                lambda n, d: max(0, n * rollup_us + d),
                st.integers(0, 10_001),
                st.integers(-1, 1),
            ),
        )
    )
    return since, since + span, resolution


@settings(max_examples=150)
@given(bounds=ranges(), iso=st.booleans())
@example(bounds=(0, 10 * MICROS, "10s"), iso=False)
@example(bounds=(0, 10 * MICROS - 1, "10s"), iso=False)
@example(bounds=(MIN_EPOCH_US, MIN_EPOCH_US, "1d"), iso=True)
@example(bounds=(MAX_EPOCH_US - 86400 * MICROS, MAX_EPOCH_US, "1d"), iso=False)
@example(bounds=(5 * MICROS, 5 * MICROS + 9_999 * 10 * MICROS, "10s"), iso=False)
@example(bounds=(5 * MICROS, 5 * MICROS + 10_000 * 10 * MICROS, "10s"), iso=False)
def test_a_valid_range_has_exactly_the_promised_points(
    client: Client,
    urls: list[str],
    member_token: ApiToken,
    bounds: tuple[int, int, str],
    iso: bool,
) -> None:
    since, until, resolution = bounds
    exact = max(abs(since), abs(until)) < EXACT_FLOAT_US
    text = epoch_text if exact and not iso else iso_text
    query = {"since": text(since), "until": text(until), "resolution": resolution}
    rollup = ROLLUP_SECONDS[resolution]
    expected = (until - since) // (rollup * MICROS) + 1
    for url in urls:
        response = client.get(url, query, **bearer(member_token))
        body = response.json()
        if expected > 10_000:  # MAX_POINTS
            assert response.status_code == 400
            assert f"would return {expected} points" in body["detail"]
            continue
        assert response.status_code == 200, body
        assert len(body) == expected
        last = (until // MICROS) // rollup * rollup
        assert [t for t, _ in body] == [last - rollup * i for i in reversed(range(expected))]
