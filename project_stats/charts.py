"""Geometry of the server-drawn bar chart of one series: pure, no Django.

:func:`bar_chart` turns ``[(bucket_start_epoch, count), ...]`` (what
``tsdb.get_range`` returns) into positions in SVG user units; a template
draws them. Times are labelled in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MINUTE = 60
HOUR = 3600
DAY = 86400

# Label spacings tried in order; the first leaving at most MAX_X_LABELS wins.
_LABEL_INTERVALS = (
    10,
    30,
    MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
    28 * DAY,
    91 * DAY,
    364 * DAY,
)
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Margins:
    top: float = 12
    right: float = 12
    bottom: float = 30
    left: float = 64


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    timestamp: int
    count: int
    # "2024-03-05 13:00 UTC: 1,234"
    title: str


@dataclass(frozen=True)
class Tick:
    # x for the time axis, y for the count axis, in SVG user units.
    position: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    # The plot area's edges.
    left: float
    top: float
    right: float
    bottom: float
    rollup: int
    bars: tuple[Bar, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    total: int
    peak: int

    @property
    def points(self) -> int:
        return len(self.bars)

    @property
    def total_label(self) -> str:
        return f"{self.total:,}"

    @property
    def peak_label(self) -> str:
        return f"{self.peak:,}"

    @property
    def first(self) -> int | None:
        """Start of the oldest bucket (epoch seconds)."""
        return self.bars[0].timestamp if self.bars else None

    @property
    def y_label_x(self) -> float:
        """Where count labels end, just left of the plot."""
        return self.left - 6

    @property
    def x_tick_end(self) -> float:
        return self.bottom + 4

    @property
    def x_label_y(self) -> float:
        return self.bottom + 16


def _round(value: float) -> float:
    return round(value, 2)


def count_ticks(peak: int, target: int = 4) -> list[int]:
    """Round count-axis values from 0 up to the first at or above ``peak``.

    Steps are 1, 2, 2.5 or 5 times a power of ten, never below 1, chosen so
    that there are about ``target`` steps. ``[0, 1]`` when ``peak`` is 0.
    """
    peak = max(peak, 1)
    raw = peak / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(
        (m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw and m * magnitude >= 1),
        10 * magnitude,
    )
    if step != int(step):
        # 2.5 x 1 is no whole count: the next round step is.
        step = 5 * magnitude
    whole = int(step)
    top = -(-peak // whole) * whole
    return list(range(0, top + 1, whole))


def label_interval(rollup: int, points: int) -> int:
    """Seconds between time labels: a round multiple of ``rollup`` leaving few labels."""
    span = rollup * points
    for interval in _LABEL_INTERVALS:
        if interval % rollup == 0 and span / interval <= MAX_X_LABELS:
            return interval
    return rollup * max(1, math.ceil(points / MAX_X_LABELS))


def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def time_label(epoch: int, interval: int) -> str:
    """A short axis label; dates where labels are a day or more apart, or at midnight."""
    when = _utc(epoch)
    if interval >= DAY or (interval >= HOUR and epoch % DAY == 0):
        return when.strftime("%b %d")
    if interval % MINUTE:
        return when.strftime("%H:%M:%S")
    return when.strftime("%H:%M")


def bucket_title(epoch: int, rollup: int, count: int) -> str:
    """The full UTC start of a bucket and its count, for a tooltip."""
    when = _utc(epoch)
    if rollup % DAY == 0:
        text = when.strftime("%Y-%m-%d")
    elif rollup % MINUTE == 0:
        text = when.strftime("%Y-%m-%d %H:%M")
    else:
        text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC: {count:,}"


def bar_chart(
    points: Sequence[tuple[int, int]],
    rollup: int,
    *,
    width: int = 960,
    height: int = 280,
    margins: Margins | None = None,
) -> BarChart:
    """Lay out one bar per point, oldest on the left, on a count axis starting at 0.

    A non-zero count is never drawn thinner than one unit, so it stays
    distinguishable from zero however tall the peak.
    """
    if rollup <= 0:
        raise ValueError(f"rollup must be positive, not {rollup!r}")
    m = margins or Margins()
    left, top = m.left, m.top
    right, bottom = width - m.right, height - m.bottom
    plot_width, plot_height = max(right - left, 1.0), max(bottom - top, 1.0)

    counts = [count for _, count in points]
    peak = max(counts, default=0)
    y_values = count_ticks(peak)
    y_top = y_values[-1]

    slot = plot_width / max(len(points), 1)
    # Gaps only where bars are wide enough to keep some body.
    gap = slot * 0.2 if slot >= 4 else 0.0
    bars = []
    for index, (epoch, count) in enumerate(points):
        bar_height = plot_height * count / y_top
        if count:
            bar_height = max(bar_height, 1.0)
        bars.append(
            Bar(
                x=_round(left + index * slot + gap / 2),
                y=_round(bottom - bar_height),
                width=_round(slot - gap),
                height=_round(bar_height),
                timestamp=epoch,
                count=count,
                title=bucket_title(epoch, rollup, count),
            )
        )

    interval = label_interval(rollup, len(points))
    x_ticks = tuple(
        Tick(_round(left + (index + 0.5) * slot), time_label(epoch, interval))
        for index, (epoch, _) in enumerate(points)
        if epoch % interval == 0
    )
    y_ticks = tuple(Tick(_round(bottom - plot_height * v / y_top), f"{v:,}") for v in y_values)

    return BarChart(
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        rollup=rollup,
        bars=tuple(bars),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        total=sum(counts),
        peak=peak,
    )
