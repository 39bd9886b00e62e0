"""``project_stats.summary``: plain functions, no database."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from project_stats import summary, usage
from project_stats.constants import STAT_CODES
from project_stats.usage import UsageError

ROLLUPS = ((10, 360), (3600, 168), (86400, 90))
NOW = datetime(2024, 3, 5, 13, 37, 42, 500000, tzinfo=UTC)
HOUR = 3600
START = 1709640000  # 2024-03-05T12:00:00Z


def parse(**params: Any) -> tuple[usage.UsageQuery, bool]:
    query = {
        "field": ["sum(quantity)"],
        **{k: v if isinstance(v, list) else [v] for k, v in params.items()},
    }
    return summary.parse(query, now=NOW, rollups=ROLLUPS)


def test_an_explicit_end_is_inclusive_and_stats_v2s_is_not() -> None:
    end = str(START + 2 * HOUR)
    query, download = parse(start=str(START), end=end)
    assert (query.start, query.end, query.interval, query.rollup) == (
        START,
        START + 3 * HOUR,
        HOUR,
        HOUR,
    )
    assert download is False
    v2 = usage.parse(
        {"field": ["sum(quantity)"], "category": ["error"], "start": [str(START)], "end": [end]},
        now=NOW,
        rollups=ROLLUPS,
    )
    assert v2.end == START + 2 * HOUR
    # statsPeriod ends now on both.
    period, _ = parse(statsPeriod="2h")
    assert (period.start, period.end) == (START - HOUR, START + 2 * HOUR)
    assert period.group_by == ("project",)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"interval": "5m"}, "The interval has to be at least one hour."),
        ({"interval": "30m"}, "The interval has to be at least one hour."),
        ({"category": "replay"}, 'Invalid category: "replay"'),
        ({"category": "security"}, 'Invalid category: "security"'),
        ({"download": "yes please"}, 'Invalid download: "yes please" (use true or false)'),
        ({"field": "count()"}, 'Invalid field: "count()"'),
        ({"outcome": "dropped"}, 'Invalid outcome: "dropped"'),
    ],
)
def test_bad_parameters(params: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(statsPeriod="1d", **params)
    assert raised.value.message == message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], False),
        ([""], False),
        (["true"], True),
        (["TRUE"], True),
        (["1"], True),
        (["no"], False),
        (["true", "false"], False),
    ],
)
def test_download(values: list[str], expected: bool) -> None:
    assert summary.parse_download(values) is expected


def test_answer_sums_per_interval_outcomes() -> None:
    query, _ = parse(start=str(START), end=str(START + 2 * HOUR - 1))
    code = STAT_CODES
    cells = {
        # Hour 1: 10 received, 4 rejected; hour 2: 1 received, 5 rejected (accepted clamps).
        (7, code["received"], START): 10,
        (7, code["rejected"], START): 4,
        (7, code["received"], START + HOUR): 1,
        (7, code["rejected"], START + HOUR): 5,
        (7, code["received"], START + 2 * HOUR): 99,  # outside the range
        (8, code["web-crawlers"], START): 2,
    }
    body = summary.answer(query, cells, [(9, "quiet"), (8, "b"), (7, "a")])
    assert [p["id"] for p in body["projects"]] == ["7", "8", "9"]
    a, b, quiet = (p["stats"][0] for p in body["projects"])
    assert a["outcomes"] == {**dict.fromkeys(usage.OUTCOMES, 0), "accepted": 6, "rate_limited": 9}
    assert a["totals"] == {"dropped": 9, "sum(quantity)": 15}
    assert b["outcomes"]["filtered"] == 2 and b["totals"] == {"dropped": 2, "sum(quantity)": 2}
    assert quiet["totals"] == {"dropped": 0, "sum(quantity)": 0}
    assert (body["start"], body["end"]) == ("2024-03-05T12:00:00Z", "2024-03-05T14:00:00Z")
    other, _ = parse(start=str(START), end=str(START + HOUR), category="transaction")
    assert summary.answer(other, cells, [(7, "a")])["projects"] == [
        {"id": "7", "slug": "a", "stats": []}
    ]


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
def test_any_slug_reads_back_from_the_csv(slugs: list[str]) -> None:
    query, _ = parse(statsPeriod="1h")
    projects = list(enumerate(slugs, start=1))
    body = summary.answer(query, {}, projects)
    text = summary.to_csv(body, summary.csv_categories(query))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][:2] == ["project_id", "project_slug"]
    assert rows[0][2:] == summary.csv_columns("error")
    assert [(int(row[0]), row[1]) for row in rows[1:]] == projects
    assert all(row[2:] == ["0"] * 9 for row in rows[1:])
