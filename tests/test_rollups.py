from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from project_stats.tsdb.rollups import (
    align_up,
    bucket_start,
    chunk_span,
    closed_buckets,
    earlier,
    format_resolution,
    normalize_to_epoch,
    optimal_rollup,
    parse_resolution,
    parse_time,
    point_count,
    retention_start,
    series,
    to_datetime,
    to_micros,
)

ROLLUPS = ((10, 360), (3600, 168), (86400, 90))
NOW = datetime(2024, 3, 5, 13, 37, 42, 500000, tzinfo=UTC)
NOW_S = NOW.timestamp()


def test_normalize_to_epoch_aligns_down_to_the_bucket() -> None:
    assert normalize_to_epoch(1536526799, 3600) == 1536523200
    assert normalize_to_epoch(1536526800, 3600) == 1536526800
    assert normalize_to_epoch(15, 10) == 10


def test_bucket_start_is_utc_aligned_whatever_the_offset() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert bucket_start(local, 86400) == bucket_start(NOW, 86400)
    assert datetime.fromtimestamp(bucket_start(NOW, 86400), UTC) == datetime(2024, 3, 5, tzinfo=UTC)
    assert bucket_start(NOW_S, 10) == int(NOW_S) - int(NOW_S) % 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1.5, 1_500_000), (-1, -1_000_000), (NOW, int(NOW_S * 1_000_000))],
)
def test_to_micros(value: object, expected: int) -> None:
    assert to_micros(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        1e20,
        1_700_000_000_000_000,
        True,
        "1",
        None,
        datetime(2024, 1, 1),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_to_micros_refuses_what_is_not_a_representable_time(value: object) -> None:
    with pytest.raises(ValueError):
        to_micros(value)  # type: ignore[arg-type]


def test_to_datetime_round_trips() -> None:
    assert to_datetime(NOW_S) == NOW
    assert to_datetime(NOW) == NOW


@pytest.mark.parametrize(
    ("since_offset", "rollup", "points"),
    [
        (86399, 3600, 24),
        (3600, 10, 361),
        (3601, 3600, 2),
        (7 * 86400 + 1, 86400, 8),
        (0, 10, 1),
        (9.999999, 10, 1),
        (10, 10, 2),
    ],
)
def test_series_length_is_floor_span_over_rollup_plus_one(
    since_offset: float, rollup: int, points: int
) -> None:
    start = NOW_S - since_offset
    assert point_count(start, NOW_S, rollup) == points
    result = series(start, NOW_S, rollup)
    assert len(result) == points
    assert result[-1] == bucket_start(NOW, rollup)
    assert all(b - a == rollup for a, b in zip(result, result[1:], strict=False))


def test_series_is_empty_when_start_is_after_end() -> None:
    assert series(NOW_S + 1, NOW_S, 10) == []
    assert point_count(NOW_S + 1, NOW_S, 10) == 0


def test_series_matches_sentrys_stepping_loop() -> None:
    # Sentry steps a datetime back by the rollup while it is still >= start.
    for offset in (0, 1, 9, 10, 11, 3599, 3600, 3601, 7199, 86399, 86400):
        start = NOW - timedelta(seconds=offset, microseconds=250000)
        for rollup in (10, 3600, 86400):
            expected, t = [], NOW
            while t >= start:
                expected.append(bucket_start(t, rollup))
                t -= timedelta(seconds=rollup)
            assert series(start, NOW, rollup) == sorted(expected)


@pytest.mark.parametrize(
    ("span", "end_offset", "expected"),
    [
        (3600, 0, 10),
        (3601, 0, 3600),
        (86399, 0, 3600),
        (7 * 86400, 0, 3600),
        (7 * 86400 + 1, 0, 86400),
        (90 * 86400, 0, 86400),
        (400 * 86400, 0, 86400),  # nothing spans it: the coarsest
        # A short window whose 10s data expired comes from the hourly rollup.
        (600, 2 * 3600, 3600),
        # ...and one older than the hourly retention from the daily rollup.
        (600, 8 * 86400, 86400),
        (600, 3600, 10),  # the 10s retention reaches exactly back to it
    ],
)
def test_optimal_rollup(span: int, end_offset: int, expected: int) -> None:
    end = NOW_S - end_offset
    assert optimal_rollup(ROLLUPS, end - span, end, NOW_S) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("1h", 3600), ("60m", 3600), ("3600s", 3600), ("1d", 86400), ("24h", 86400)],
)
def test_parse_resolution(text: str, seconds: int) -> None:
    assert parse_resolution(text) == seconds


@pytest.mark.parametrize(
    "text", ["1H", "1w", "0s", "-1h", "", "h", "1", " 1h", "1h ", "1.5h", "1e3s", "9" * 20 + "s"]
)
def test_parse_resolution_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_resolution(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "10s"), (60, "1m"), (3600, "1h"), (86400, "1d")]
)
def test_format_resolution(seconds: int, text: str) -> None:
    assert format_resolution(seconds) == text
    assert parse_resolution(text) == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1709645862", datetime(2024, 3, 5, 13, 37, 42, tzinfo=UTC)),
        ("1709645862.5", NOW),
        (" 1709645862.5 ", NOW),
        ("2024-03-05T13:37:42.5Z", NOW),
        ("2024-03-05T13:37:42.500000+00:00", NOW),
        ("2024-03-05T19:07:42.5+05:30", NOW),
        ("2024-03-05 13:37:42.5", NOW),  # no offset: UTC
        ("2024-03-05", datetime(2024, 3, 5, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["", " ", "yesterday", "nan", "inf", "1e20", "2024-13-01", "2024-03-05T25:00", "1h"]
)
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_retention_start_is_the_first_retained_second() -> None:
    # now - 3600 = 12:37:42.5: the 10s bucket starting 12:37:40 started before it.
    start = retention_start(10, 360, NOW)
    assert start == int(NOW_S) - 3600 + 1
    assert retention_start(10, 360, int(NOW_S)) == int(NOW_S) - 3600
    assert retention_start(3600, 168, NOW) == int(NOW_S) - 168 * 3600 + 1


def test_align_up() -> None:
    assert align_up(3600, 3600) == 3600
    assert align_up(3601, 3600) == 7200
    assert align_up(0, 10) == 0
    assert align_up(-5, 10) == 0


def test_closed_buckets_overlapping_the_range() -> None:
    hour = bucket_start(NOW, 3600)  # 13:00, still open at 13:37
    got = closed_buckets(hour - 3 * 3600 + 1, hour - 1, 3600, NOW)
    assert list(got) == [hour - 3 * 3600, hour - 2 * 3600, hour - 3600]
    # The open bucket is never included, however far `until` reaches.
    assert list(closed_buckets(hour - 3600, NOW_S + 86400, 3600, NOW)) == [hour - 3600]
    # `until` is exclusive: a bucket starting at it does not overlap.
    assert list(closed_buckets(hour - 2 * 3600, hour - 3600, 3600, NOW)) == [hour - 2 * 3600]
    # A bucket ending exactly at `now` is closed.
    assert list(closed_buckets(hour - 3600, hour, 3600, hour)) == [hour - 3600]


def test_closed_buckets_empty() -> None:
    assert len(closed_buckets(NOW, NOW, 3600, NOW)) == 0
    assert len(closed_buckets(NOW_S + 1, NOW_S, 3600, NOW)) == 0
    assert len(closed_buckets(NOW_S - 60, NOW_S, 3600, NOW)) == 0  # only the open bucket


@pytest.mark.parametrize(
    ("target", "source", "budget", "span"),
    [
        (3600, 10, 360, 3600),
        (86400, 3600, 360, 15 * 86400),
        (3600, 10, 1, 3600),
        (60, 10, 360, 3600),
    ],
)
def test_chunk_span_is_whole_target_buckets(
    target: int, source: int, budget: int, span: int
) -> None:
    assert chunk_span(target, source, budget) == span
    assert span % target == 0


def test_earlier_stops_at_the_first_representable_time() -> None:
    first = datetime.min.replace(tzinfo=UTC)
    assert earlier(first + timedelta(seconds=5), timedelta(seconds=2)) == first + timedelta(
        seconds=3
    )
    assert earlier(first + timedelta(seconds=5), timedelta(days=1)) == first
