"""``project_stats.usage``: plain functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from project_stats import usage
from project_stats.constants import STAT_CODES
from project_stats.usage import UsageError, UsageQuery

ROLLUPS = ((10, 360), (3600, 168), (86400, 90))
# 2024-03-05 13:37:42.5 UTC
NOW = datetime(2024, 3, 5, 13, 37, 42, 500000, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
HOUR, DAY = 3600, 86400
BASE = {"field": ["sum(quantity)"], "category": ["error"]}


def parse(**params: Any) -> UsageQuery:
    query = {**BASE, **{k: v if isinstance(v, list) else [v] for k, v in params.items()}}
    return usage.parse(query, now=NOW, rollups=ROLLUPS)


def error(**params: Any) -> str:
    with pytest.raises(UsageError) as raised:
        parse(**params)
    return raised.value.message


# -- parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("2h", 7200), ("1d", DAY), ("2w", 14 * DAY)],
)
def test_parse_period(text: str, seconds: int) -> None:
    assert usage.parse_period(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0h", "1y", "h", "-1h", "1.5h", "1H", "١h", "1 h"])
def test_parse_period_refuses(text: str) -> None:
    assert usage.parse_period(text) is None


@pytest.mark.parametrize(
    ("text", "seconds"), [(None, HOUR), ("5m", 300), ("1m", 60), ("6h", 6 * HOUR), ("1d", DAY)]
)
def test_parse_interval(text: str | None, seconds: int) -> None:
    assert usage.parse_interval(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("60", "Invalid interval: '60'"),
        ("30s", "Invalid interval: '30s'"),
        ("2d", "The interval has to be at most one day."),
        ("1w", "The interval has to be at most one day."),
        ("7m", "The interval has to divide one day without a remainder."),
        ("5h", "The interval has to divide one day without a remainder."),
    ],
)
def test_parse_interval_refuses(text: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        usage.parse_interval(text)
    assert raised.value.message.startswith(message)


def test_parse_projects() -> None:
    assert usage.parse_projects([]) is None
    assert usage.parse_projects(["-1"]) is None
    assert usage.parse_projects(["3", "-1"]) is None
    assert usage.parse_projects(["3", "1", "3"]) == (1, 3)
    assert usage.parse_projects(["0", "-5"]) == (-5, 0)  # numbers, matching no project
    for bad in (["x"], ["1", "2.0"], ["--1"], ["1e3"], ["²"]):
        with pytest.raises(UsageError, match="Invalid project parameter"):
            usage.parse_projects(bad)


def test_field_and_group_by_are_deduplicated_in_order() -> None:
    query = parse(
        field=["sum(times_seen)", "sum(quantity)", "sum(times_seen)"],
        groupBy=["reason", "outcome", "reason"],
        statsPeriod="1d",
    )
    assert query.fields == ("sum(times_seen)", "sum(quantity)")
    assert query.group_by == ("reason", "outcome")


def test_filters() -> None:
    query = parse(outcome=["Accepted", "FILTERED"], reason="none", statsPeriod="1h")
    assert query.outcomes == {"accepted", "filtered"}
    assert query.reasons == {"none"}
    assert query.categories == {"error"}
    assert query.counts_errors
    assert not parse(category="transaction", statsPeriod="1h").counts_errors
    assert parse(category=["span", "security"], statsPeriod="1h").counts_errors
    assert parse(category=[], groupBy="category", statsPeriod="1h").categories is None


def test_errors_in_order() -> None:
    # Every parameter wrong: the field is reported first, then the next one fixed at a time.
    params: dict[str, Any] = {
        "field": "x",
        "groupBy": "y",
        "category": "z",
        "outcome": "w",
        "project": "v",
        "statsPeriod": "u",
        "interval": "t",
    }
    messages = []
    fixes = {
        "field": "sum(quantity)",
        "groupBy": "outcome",
        "category": "error",
        "outcome": "accepted",
        "project": "-1",
        "statsPeriod": "1d",
        "interval": "1h",
    }
    for name, fixed in fixes.items():
        messages.append(error(**params))
        params[name] = fixed
    assert messages == [
        'Invalid field: "x"',
        'Invalid groupBy: "y"',
        'Invalid category: "z"',
        'Invalid outcome: "w"',
        "Invalid project parameter. Values must be numbers.",
        "Invalid statsPeriod: 'u'",
        "Invalid interval: 't' (use a number and one of m, h, d, w)",
    ]
    parse(**params)


def test_empty_values_are_absent() -> None:
    assert error(field=[""]) == 'At least one "field" is required.'
    query = parse(field=["", "sum(quantity)"], groupBy="", reason="", statsPeriod="1h")
    assert query.group_by == () and query.reasons is None


# -- the range ----------------------------------------------------------------


def test_stats_period_ends_now_and_wins() -> None:
    query = parse(statsPeriod="2h", start="garbage", end="x")
    assert query.start == (NOW_S - 2 * HOUR) // HOUR * HOUR
    assert query.end == NOW_S // HOUR * HOUR + HOUR
    assert len(query.intervals) == 3


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2024-03-05T10:00:00", "2024-03-05T12:00:00"),  # naive: UTC (Grafana's form)
        ("2024-03-05T10:00:00Z", "2024-03-05T12:00:00Z"),
        ("2024-03-05T11:00:00+01:00", "2024-03-05T07:00:00-05:00"),
        ("1709632800", "1709640000"),
        ("1709632800.0", "1709640000"),
        (" 2024-03-05T10:00:00Z", "2024-03-05T12:00:00Z "),
    ],
)
def test_start_and_end_forms(start: str, end: str) -> None:
    query = parse(start=start, end=end)
    assert (query.start, query.end, query.interval) == (1709632800, 1709640000, HOUR)


def test_alignment() -> None:
    # 10:17:05 .. 11:00:00.5: floored and rounded up; an aligned end stays.
    query = parse(start="2024-03-05T10:17:05", end="1709636400.5", interval="1h")
    assert (query.start, query.end) == (1709632800, 1709640000)
    query = parse(start="2024-03-05T10:17:05", end="2024-03-05T11:00:00", interval="1h")
    assert query.end == 1709636400
    query = parse(start="2024-03-05T13:07:05", end="2024-03-05T13:20:00", interval="5m")
    five_past, twenty_past = 1709632800 + 3 * HOUR + 300, 1709632800 + 3 * HOUR + 1200
    assert (query.start, query.end, query.rollup) == (five_past, twenty_past, 10)
    assert list(query.intervals) == list(range(five_past, twenty_past, 300))
    query = parse(start="2024-03-01T10:00:00", end="2024-03-03T00:00:01", interval="1d")
    assert (query.start, query.end, query.rollup) == (1709251200, 1709510400, DAY)


def test_default_range_is_ninety_days() -> None:
    query = parse(interval="1d")
    assert query.start == (NOW_S - 90 * DAY) // DAY * DAY
    assert query.end == NOW_S // DAY * DAY + DAY
    assert error() == usage.TOO_MANY_BUCKETS


def test_the_bucket_limit() -> None:
    # 1000 hours back from an unaligned now: 1001 intervals.
    assert error(statsPeriod="1000h", interval="1h") == usage.TOO_MANY_BUCKETS
    parse(statsPeriod="999h", interval="1h")
    assert error(start="2024-01-01T00:00:00Z", end="2024-02-11T16:00:01Z") == (
        usage.TOO_MANY_BUCKETS
    )
    parse(start="2024-01-01T00:00:00Z", end="2024-02-11T16:00:00Z")  # exactly 1000


def test_start_before_end() -> None:
    assert error(start="2024-01-02", end="2024-01-01") == "start must be before end"
    assert error(start="1704067200", end="2024-01-01T00:00:00Z") == "start must be before end"
    assert error(start="2024-01-01") == "start and end are both required"
    assert error(start="2024-01-01", end="nope").startswith("Invalid end: 'nope'")
    assert error(start="inf", end="2024-01-01").startswith("Invalid start: 'inf'")


def test_dates_past_the_calendar_are_refused() -> None:
    assert "years 1 to 9999" in error(start="9999-12-31T22:00:00", end="9999-12-31T23:30:00")


# -- which rollup answers -----------------------------------------------------


def test_the_coarsest_rollup_dividing_the_interval_that_holds_data() -> None:
    assert parse(statsPeriod="1h", interval="5m").rollup == 10
    assert parse(statsPeriod="1h", interval="1h").rollup == HOUR
    assert parse(statsPeriod="1d", interval="6h").rollup == HOUR
    assert parse(statsPeriod="30d", interval="1d").rollup == DAY
    # A week of hours stays hourly: the first interval starts within an hour
    # of the oldest kept hourly bucket.
    week = parse(statsPeriod="7d", interval="1h")
    assert (week.rollup, week.interval) == (HOUR, HOUR)


def test_fallback_to_the_finest_interval_served() -> None:
    # 5m three days back: the 10 s rollup keeps an hour, the hourly one serves.
    query = parse(statsPeriod="3d", interval="5m")
    assert (query.interval, query.rollup) == (HOUR, HOUR)
    assert query.start == (NOW_S - 3 * DAY) // HOUR * HOUR
    # Hours of last month: daily.
    query = parse(start="2024-02-01T05:00:00Z", end="2024-02-01T09:00:00Z", interval="1h")
    assert (query.start, query.end, query.interval, query.rollup) == (
        1706745600,
        1706832000,
        DAY,
        DAY,
    )
    # Older than any rollup keeps: the coarsest, whose data is what is left.
    query = parse(start="2020-01-01T00:00:00Z", end="2020-01-01T06:00:00Z", interval="1h")
    assert (query.interval, query.rollup) == (DAY, DAY)


def test_fallback_with_other_rollups() -> None:
    rollups = ((60, 60), (900, 96), (21600, 120))
    params = {**BASE, "statsPeriod": ["3h"], "interval": ["5m"]}
    query = usage.parse(params, now=NOW, rollups=rollups)
    assert (query.interval, query.rollup) == (900, 900)
    params["interval"] = ["1m"]
    params["statsPeriod"] = ["30m"]
    assert usage.parse(params, now=NOW, rollups=rollups).rollup == 60
    params["statsPeriod"] = ["10d"]
    params["interval"] = ["1d"]
    query = usage.parse(params, now=NOW, rollups=rollups)
    assert (query.interval, query.rollup) == (DAY, 21600)


# -- outcomes -----------------------------------------------------------------


def test_outcomes_arithmetic() -> None:
    assert usage.outcomes(100, 10, 7, {"browser-extensions": 3, "web-crawlers": 2}) == [
        ("rate_limited", "none", 10),
        ("filtered", "browser-extensions", 3),
        ("filtered", "web-crawlers", 2),
        ("filtered", "none", 2),
        ("accepted", "none", 83),
    ]
    # Filter stats beyond blacklisted: filtered is their sum, none unexplained.
    assert usage.outcomes(10, 0, 1, {"cors": 4}) == [
        ("filtered", "cors", 4),
        ("accepted", "none", 6),
    ]
    # Clamped at zero.
    assert usage.outcomes(5, 4, 0, {"localhost": 3}) == [
        ("rate_limited", "none", 4),
        ("filtered", "localhost", 3),
    ]
    assert usage.outcomes(0, 0, 0, {}) == []


@given(
    received=st.integers(0, 10**6),
    rejected=st.integers(0, 10**6),
    blacklisted=st.integers(0, 10**6),
    filters=st.dictionaries(
        st.sampled_from(["cors", "localhost", "ip-address"]), st.integers(0, 10**5)
    ),
)
def test_outcomes_properties(
    received: int, rejected: int, blacklisted: int, filters: dict[str, int]
) -> None:
    rows = usage.outcomes(received, rejected, blacklisted, filters)
    by_outcome: dict[str, int] = {}
    for outcome, _, count in rows:
        assert count > 0
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    filtered = max(blacklisted, sum(filters.values()))
    assert by_outcome.get("filtered", 0) == filtered
    assert by_outcome.get("rate_limited", 0) == rejected
    assert by_outcome.get("accepted", 0) == max(0, received - rejected - filtered)
    assert sum(by_outcome.values()) == max(received, rejected + filtered)


# -- the answer ---------------------------------------------------------------


def cells(*rows: tuple[int, str, int, int]) -> dict[tuple[int, int, int], int]:
    return {(pk, STAT_CODES[stat], bucket): n for pk, stat, bucket, n in rows}


def test_answer_shape_and_sorting() -> None:
    query = parse(
        start="1709632800",
        end="1709640000",
        groupBy=["project", "outcome"],
        field=["sum(quantity)", "sum(times_seen)"],
    )
    answer = usage.answer(
        query,
        cells(
            (10, "received", 1709632800, 5),
            (9, "received", 1709636400, 7),
            (9, "rejected", 1709636400, 1),
            (10, "generated", 1709632800, 99),  # not an outcome
            (10, "received", 1709640000, 1000),  # past the end
        ),
    )
    assert answer == {
        "start": "2024-03-05T10:00:00Z",
        "end": "2024-03-05T12:00:00Z",
        "intervals": ["2024-03-05T10:00:00Z", "2024-03-05T11:00:00Z"],
        "groups": [
            {
                "by": {"project": 9, "outcome": "accepted"},
                "totals": {"sum(quantity)": 6, "sum(times_seen)": 6},
                "series": {"sum(quantity)": [0, 6], "sum(times_seen)": [0, 6]},
            },
            {
                "by": {"project": 9, "outcome": "rate_limited"},
                "totals": {"sum(quantity)": 1, "sum(times_seen)": 1},
                "series": {"sum(quantity)": [0, 1], "sum(times_seen)": [0, 1]},
            },
            {
                "by": {"project": 10, "outcome": "accepted"},
                "totals": {"sum(quantity)": 5, "sum(times_seen)": 5},
                "series": {"sum(quantity)": [5, 0], "sum(times_seen)": [5, 0]},
            },
        ],
    }


def test_answer_sums_buckets_into_intervals_first() -> None:
    query = parse(start="1709596800", end="1709683200", interval="1d", groupBy=["reason"])
    data = cells(
        (1, "received", 1709632800, 10),
        (1, "blacklisted", 1709632800, 3),
        (1, "cors", 1709636400, 4),
    )
    # Summed over the day, the filter stat (4) explains all of blacklisted (3).
    assert [(g["by"], g["totals"]) for g in usage.answer(query, data)["groups"]] == [
        ({"reason": "cors"}, {"sum(quantity)": 4}),
        ({"reason": "none"}, {"sum(quantity)": 6}),
    ]


def test_answer_without_group_by_and_labels() -> None:
    query = parse(start="1709632800", end="1709640000", category=["transaction"])
    answer = usage.answer(query, cells((1, "received", 1709632800, 5)))
    assert answer["groups"] == [
        {"by": {}, "totals": {"sum(quantity)": 0}, "series": {"sum(quantity)": [0, 0]}}
    ]
    query = parse(start="1709632800", end="1709640000", category=["security"], groupBy="category")
    answer = usage.answer(query, cells((1, "received", 1709632800, 5)))
    assert answer["groups"][0]["by"] == {"category": "error"}


def test_timestamps_of_early_years_have_four_digits() -> None:
    query = parse(start="0001-01-01T00:00:00Z", end="0001-01-01T02:00:00Z", interval="1d")
    answer = usage.answer(query, {})
    assert answer["start"] == "0001-01-01T00:00:00Z"
    assert answer["intervals"] == ["0001-01-01T00:00:00Z"]


@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            *[st.lists(st.integers(0, 50), min_size=n, max_size=n) for _ in range(5)]
        )
    )
)
def test_outcome_series_is_outcomes_interval_by_interval(
    columns: tuple[list[int], ...],
) -> None:
    received, rejected, blacklisted, cors, localhost = columns
    rows = usage.outcome_series(
        received, rejected, blacklisted, {"cors": cors, "localhost": localhost}
    )
    for index in range(len(received)):
        expected = usage.outcomes(
            received[index],
            rejected[index],
            blacklisted[index],
            {"cors": cors[index], "localhost": localhost[index]},
        )
        got = [(o, r, series[index]) for o, r, series in rows if series[index]]
        assert got == expected
