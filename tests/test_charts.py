from __future__ import annotations

from datetime import UTC, datetime

import pytest

from project_stats.charts import (
    Margins,
    bar_chart,
    bucket_title,
    count_ticks,
    label_interval,
    time_label,
)

# 2024-03-05 00:00:00 UTC, a midnight.
MIDNIGHT = int(datetime(2024, 3, 5, tzinfo=UTC).timestamp())
HOUR = 3600


def hourly(counts: list[int], first: int = MIDNIGHT) -> list[tuple[int, int]]:
    return [(first + i * HOUR, c) for i, c in enumerate(counts)]


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (9, [0, 5, 10]),
        (90, [0, 25, 50, 75, 100]),
        (4177, [0, 2000, 4000, 6000]),
        (1_000_000, [0, 250_000, 500_000, 750_000, 1_000_000]),
    ],
)
def test_count_ticks(peak: int, expected: list[int]) -> None:
    assert count_ticks(peak) == expected


def test_count_ticks_always_reach_the_peak_in_few_even_steps() -> None:
    for peak in range(0, 20_000, 7):
        ticks = count_ticks(peak)
        steps = {b - a for a, b in zip(ticks, ticks[1:], strict=False)}
        assert ticks[0] == 0 and ticks[-1] >= peak
        assert len(steps) == 1 and 2 <= len(ticks) <= 9, (peak, ticks)


@pytest.mark.parametrize(
    ("rollup", "points", "interval"),
    [(10, 360, 600), (3600, 24, 3 * HOUR), (86400, 90, 14 * 86400), (60, 5, 60)],
)
def test_label_interval(rollup: int, points: int, interval: int) -> None:
    assert label_interval(rollup, points) == interval


def test_time_labels_and_titles_are_utc() -> None:
    assert time_label(MIDNIGHT + 15 * HOUR, 3 * HOUR) == "15:00"
    assert time_label(MIDNIGHT, 3 * HOUR) == "Mar 05"
    assert time_label(MIDNIGHT + 30, 30) == "00:00:30"
    assert time_label(MIDNIGHT + 86400, 14 * 86400) == "Mar 06"
    assert bucket_title(MIDNIGHT + 13 * HOUR, HOUR, 1234) == "2024-03-05 13:00 UTC: 1,234"
    assert bucket_title(MIDNIGHT + 10, 10, 0) == "2024-03-05 00:00:10 UTC: 0"
    assert bucket_title(MIDNIGHT, 86400, 7) == "2024-03-05 UTC: 7"


def test_one_bar_per_point_left_to_right_inside_the_plot() -> None:
    counts = [5, 0, 10, 1, 3] + [2] * 19
    chart = bar_chart(hourly(counts), HOUR, width=500, height=200, margins=Margins(10, 10, 20, 40))
    assert chart.points == 24
    assert [b.count for b in chart.bars] == counts
    assert [b.timestamp for b in chart.bars] == [t for t, _ in hourly(counts)]
    assert chart.total == sum(counts) and chart.peak == 10
    assert (chart.left, chart.top, chart.right, chart.bottom) == (40, 10, 490, 180)
    for bar, following in zip(chart.bars, chart.bars[1:], strict=False):
        assert bar.x + bar.width <= following.x
    for bar in chart.bars:
        assert chart.left <= bar.x and bar.x + bar.width <= chart.right
        assert chart.top <= bar.y and bar.y + bar.height == pytest.approx(chart.bottom)


def test_heights_are_proportional_on_an_axis_from_zero() -> None:
    chart = bar_chart(hourly([10, 5, 0]), HOUR, height=220, margins=Margins(10, 10, 10, 10))
    # Ticks 0..10 over a 200-unit plot.
    assert [b.height for b in chart.bars] == [200, 100, 0]
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    assert chart.y_ticks[0].position == chart.bottom
    assert chart.y_ticks[-1].position == chart.top


def test_tiny_non_zero_counts_stay_visible() -> None:
    chart = bar_chart(hourly([1_000_000, 1, 0]), HOUR)
    assert chart.bars[1].height == 1.0
    assert chart.bars[2].height == 0


def test_time_ticks_sit_on_round_times() -> None:
    chart = bar_chart(hourly([1] * 24, first=MIDNIGHT - 12 * HOUR), HOUR)
    assert [t.label for t in chart.x_ticks] == [
        "12:00",
        "15:00",
        "18:00",
        "21:00",
        "Mar 05",
        "03:00",
        "06:00",
        "09:00",
    ]
    # Under the middle of their bar.
    bar = chart.bars[0]
    assert chart.x_ticks[0].position == pytest.approx(bar.x + bar.width / 2, abs=0.02)


def test_labels_and_totals_are_grouped() -> None:
    chart = bar_chart(hourly([12_345, 1]), HOUR)
    assert chart.total_label == "12,346"
    assert chart.peak_label == "12,345"
    assert chart.first == MIDNIGHT
    assert "12,345" in chart.bars[0].title


def test_an_empty_series_draws_an_empty_plot() -> None:
    chart = bar_chart([], HOUR)
    assert chart.points == 0 and chart.total == 0 and chart.first is None
    assert [t.label for t in chart.y_ticks] == ["0", "1"]


def test_rejects_a_non_positive_rollup() -> None:
    with pytest.raises(ValueError, match="rollup"):
        bar_chart(hourly([1]), 0)
