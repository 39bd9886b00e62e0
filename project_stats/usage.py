"""Usage stats v2 (Sentry's ``stats_v2``): its parameters, outcomes and answer.

Plain functions over plain values: no DRF, no SQL, no settings. The view
parses the query with :func:`parse` (given the configured rollups and now),
reads the planned stats through ``tsdb`` and answers :func:`answer`.

Every stored count is an event of category ``error``; the outcomes come
from the stats stored per bucket, summed into the answer's intervals first
and then derived per project and per interval:

- ``rate_limited`` (reason ``none``): ``rejected``;
- ``filtered``: each filter stat with the filter's id as reason, and the part
  of ``blacklisted`` no filter stat explains with reason ``none``, so that
  the outcome adds up to ``max(blacklisted, sum of the filter stats)``;
- ``accepted`` (reason ``none``): ``received`` minus the two above, never
  below zero.

The other outcomes and categories are valid filters and group values that
hold no counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .constants import FILTER_STATS, MAX_ID, MAX_ID_DIGITS, MAX_TIME_LENGTH, STAT_CODES
from .tsdb.rollups import MICROS, align_up, parse_time, retention_start, to_datetime, to_micros

FIELDS = ("sum(quantity)", "sum(times_seen)")
GROUP_BY = ("outcome", "category", "reason", "project")
# Sentry's data categories; all stored counts are errors.
CATEGORIES = (
    "error",
    "default",
    "security",
    "transaction",
    "attachment",
    "replay",
    "profile",
    "profile_duration",
    "profile_duration_ui",
    "profile_chunk",
    "profile_chunk_ui",
    "monitor",
    "span",
)
# Categories that Sentry counts (and labels) as ``error``.
ERROR_CATEGORIES = frozenset({"error", "default", "security"})
OUTCOMES = (
    "accepted",
    "filtered",
    "rate_limited",
    "invalid",
    "abuse",
    "client_discard",
    "cardinality_limited",
)
NO_REASON = "none"
# The stats an answer is derived from.
READ_STATS: tuple[str, ...] = ("received", "rejected", "blacklisted", *FILTER_STATS)

DAY = 86400
MAX_BUCKETS = 1000
# Without statsPeriod, start and end: the last 90 days, as Sentry.
DEFAULT_PERIOD = 90 * DAY
DEFAULT_INTERVAL = "1h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_INTERVAL_UNITS = "mhdw"
# Longest number of a period or an interval: more digits overflow any date anyway.
_MAX_DIGITS = 12

TOO_MANY_BUCKETS = (
    "Your interval and date range would create too many results. "
    "Use a larger interval, or a smaller date range."
)
INVALID_PROJECT = "Invalid project parameter. Values must be numbers."


class UsageError(ValueError):
    """A parameter the answer cannot be built from: its message is the 400's detail."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class UsageQuery:
    """A parsed ``stats_v2`` query: what to read and how to answer.

    ``start`` (inclusive) and ``end`` (exclusive) are epoch seconds on the
    grid of ``interval``; ``rollup`` divides ``interval``. ``project_ids``
    None means every project of the organization; ``categories``,
    ``outcomes`` and ``reasons`` None mean no filter.
    """

    fields: tuple[str, ...]
    group_by: tuple[str, ...]
    categories: frozenset[str] | None
    outcomes: frozenset[str] | None
    reasons: frozenset[str] | None
    project_ids: tuple[int, ...] | None
    start: int
    end: int
    interval: int
    rollup: int

    @property
    def intervals(self) -> range:
        """Start of every interval of the answer, ascending."""
        return range(self.start, self.end, self.interval)

    @property
    def first_bucket(self) -> int:
        """The first stored bucket to read (of ``rollup``)."""
        return self.start

    @property
    def last_bucket(self) -> int:
        """The last stored bucket to read (inclusive)."""
        return self.end - self.rollup

    @property
    def counts_errors(self) -> bool:
        """Whether the category filter lets the stored counts (errors) through."""
        return self.categories is None or bool(self.categories & ERROR_CATEGORIES)


def _values(params: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """The non-empty values of a repeatable parameter, in order (an empty one is absent)."""
    return [value for value in params.get(name, ()) if value != ""]


def _last(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = _values(params, name)
    return values[-1] if values else None


def parse_period(text: str, units: str = "smhdw") -> int | None:
    """Seconds of ``<number><unit>`` (a bare number is seconds when ``s`` is allowed).

    None when the text is not that, or zero.
    """
    number, unit = text, "s"
    if text and text[-1] in units:
        number, unit = text[:-1], text[-1]
    elif "s" not in units:
        return None
    if not (number.isascii() and number.isdigit()) or len(number) > _MAX_DIGITS:
        return None
    seconds = int(number) * _UNITS[unit]
    return seconds or None


def parse_interval(text: str | None) -> int:
    """Seconds of an ``interval``: ``<number><unit>`` with ``m h d w``, dividing a day."""
    text = DEFAULT_INTERVAL if text is None else text
    seconds = parse_period(text, _INTERVAL_UNITS)
    if seconds is None:
        raise UsageError(f"Invalid interval: '{text}' (use a number and one of m, h, d, w)")
    if seconds > DAY:
        raise UsageError("The interval has to be at most one day.")
    if DAY % seconds:
        raise UsageError("The interval has to divide one day without a remainder.")
    return seconds


def _time(name: str, text: str) -> int:
    try:
        if len(text) > MAX_TIME_LENGTH:
            raise ValueError(text)
        return to_micros(parse_time(text))
    except (ValueError, OverflowError):
        raise UsageError(
            f"Invalid {name}: '{text}' (use ISO 8601 or seconds since the UNIX epoch)"
        ) from None


def parse_range(
    params: Mapping[str, Sequence[str]], now: datetime, *, inclusive_end: bool = False
) -> tuple[int, int]:
    """``(start, end)`` in epoch microseconds, as asked (not aligned); ``end`` exclusive.

    ``statsPeriod`` wins over ``start``/``end``; neither: the last 90 days.
    With ``inclusive_end`` an explicit ``end`` is an instant counted too: the
    range ends one microsecond after it.
    """
    now_us = to_micros(now)
    period = _last(params, "statsPeriod")
    start_text, end_text = _last(params, "start"), _last(params, "end")
    if period is not None:
        seconds = parse_period(period)
        try:
            if seconds is None:
                raise ValueError(period)
            to_datetime((now_us - seconds * MICROS) // MICROS)  # a date, not an overflow
        except (ValueError, OverflowError):
            raise UsageError(f"Invalid statsPeriod: '{period}'") from None
        return now_us - seconds * MICROS, now_us
    if start_text is None and end_text is None:
        return now_us - DEFAULT_PERIOD * MICROS, now_us
    if start_text is None or end_text is None:
        raise UsageError("start and end are both required")
    start, end = _time("start", start_text), _time("end", end_text)
    if start >= end:
        raise UsageError("start must be before end")
    return start, end + 1 if inclusive_end else end


def _holds(rollup: int, samples: int, start: int, interval: int, now: datetime) -> bool:
    """Whether the rollup still keeps data for an answer starting at ``start``.

    The first interval may begin up to one interval before the oldest kept
    bucket: it is then only partly served, as the first one always is.
    """
    oldest = align_up(retention_start(rollup, samples, now), rollup)
    return start >= oldest - interval


def choose_rollup(
    rollups: Sequence[tuple[int, int]], start: int, interval: int, now: datetime
) -> int | None:
    """The coarsest rollup that divides ``interval`` and holds data for ``start``."""
    for rollup, samples in reversed(rollups):
        if interval % rollup == 0 and _holds(rollup, samples, start, interval, now):
            return rollup
    return None


def _served_interval(rollup: int, interval: int) -> int | None:
    """The smallest multiple of ``rollup``, at least ``interval``, that divides a day."""
    candidate = -(-interval // rollup) * rollup
    while candidate <= DAY:
        if DAY % candidate == 0:
            return candidate
        candidate += rollup
    return None


def _align(start_us: int, end_us: int, interval: int) -> tuple[int, int]:
    width = interval * MICROS
    return start_us // width * interval, -(-end_us // width) * interval


def plan_intervals(
    rollups: Sequence[tuple[int, int]],
    start_us: int,
    end_us: int,
    interval: int,
    now: datetime,
) -> tuple[int, int, int, int]:
    """``(start, end, interval, rollup)`` of the answer, in epoch seconds.

    ``start`` is floored to the interval and ``end`` rounded up to it
    (exclusive). More than :data:`MAX_BUCKETS` intervals is a
    :class:`UsageError`. The rollup is :func:`choose_rollup`'s; when none
    qualifies, the answer is at the finest interval (coarser than the one
    asked for) that a rollup still holding data for the range can serve,
    or, when none holds any, at the coarsest rollup's.
    """
    start, end = _align(start_us, end_us, interval)
    if (end - start) // interval > MAX_BUCKETS:
        raise UsageError(TOO_MANY_BUCKETS)
    rollup = choose_rollup(rollups, start, interval, now)
    if rollup is not None:
        return start, end, interval, rollup
    served: list[int] = []
    for width, samples in rollups:
        candidate = _served_interval(width, interval)
        if candidate is None:
            continue
        if _holds(width, samples, _align(start_us, end_us, candidate)[0], candidate, now):
            served.append(candidate)
    if not served:
        coarsest = _served_interval(rollups[-1][0], interval)
        served = [coarsest] if coarsest is not None else []
    if not served:
        raise UsageError("No configured rollup can serve this interval.")
    interval = min(served)
    start, end = _align(start_us, end_us, interval)
    # The coarsest rollup dividing the new interval holding data, else the
    # coarsest dividing it at all (its data is what is left).
    rollup = choose_rollup(rollups, start, interval, now) or max(
        width for width, _ in rollups if interval % width == 0
    )
    return start, end, interval, rollup


def parse(
    params: Mapping[str, Sequence[str]], *, now: datetime, rollups: Sequence[tuple[int, int]]
) -> UsageQuery:
    """A :class:`UsageQuery` from query parameters (``{name: [values]}``, repeated keys kept).

    :class:`UsageError` for the first bad parameter, checked in this order:
    ``field``, ``groupBy``, ``category``, ``outcome``, ``project``, the
    category requirement, the range, ``interval``, the number of intervals.
    ``rollups`` are the configured ``(seconds, samples)`` pairs, finest first.
    """
    fields = parse_fields(params)
    group_by = _values(params, "groupBy")
    for value in group_by:
        if value not in GROUP_BY:
            raise UsageError(f'Invalid groupBy: "{value}"')
    categories = parse_categories(params, CATEGORIES)
    outcomes = parse_outcomes(params)
    project_ids = parse_projects(_values(params, "project"))
    if not categories and "category" not in group_by:
        raise UsageError("Query must have category as groupby or filter")
    start, end, interval, rollup = parse_window(params, now=now, rollups=rollups)
    return UsageQuery(
        fields=fields,
        group_by=tuple(dict.fromkeys(group_by)),
        categories=categories,
        outcomes=outcomes,
        reasons=frozenset(_values(params, "reason")) or None,
        project_ids=project_ids,
        start=start,
        end=end,
        interval=interval,
        rollup=rollup,
    )


def parse_fields(params: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The distinct ``field`` values, in order; at least one is required."""
    fields = _values(params, "field")
    if not fields:
        raise UsageError('At least one "field" is required.')
    for value in fields:
        if value not in FIELDS:
            raise UsageError(f'Invalid field: "{value}"')
    return tuple(dict.fromkeys(fields))


def parse_categories(
    params: Mapping[str, Sequence[str]], allowed: Sequence[str]
) -> frozenset[str] | None:
    """The ``category`` values, each one of ``allowed``; None when none is given."""
    categories = _values(params, "category")
    for value in categories:
        if value not in allowed:
            raise UsageError(f'Invalid category: "{value}"')
    return frozenset(categories) or None


def parse_outcomes(params: Mapping[str, Sequence[str]]) -> frozenset[str] | None:
    """The ``outcome`` values, case-insensitive, lowered; None when none is given."""
    outcomes = _values(params, "outcome")
    for value in outcomes:
        if value.lower() not in OUTCOMES:
            raise UsageError(f'Invalid outcome: "{value}"')
    return frozenset(value.lower() for value in outcomes) or None


def parse_window(
    params: Mapping[str, Sequence[str]],
    *,
    now: datetime,
    rollups: Sequence[tuple[int, int]],
    inclusive_end: bool = False,
    min_interval: int | None = None,
) -> tuple[int, int, int, int]:
    """``(start, end, interval, rollup)`` of the answer from the range and ``interval``.

    The range (:func:`parse_range`), then ``interval`` (:func:`parse_interval`,
    at least ``min_interval`` seconds when given), then the intervals
    (:func:`plan_intervals`) and the years they fall in.
    """
    start_us, end_us = parse_range(params, now, inclusive_end=inclusive_end)
    interval = parse_interval(_last(params, "interval"))
    if min_interval is not None and interval < min_interval:
        raise UsageError(f"The interval has to be at least {_duration(min_interval)}.")
    start, end, interval, rollup = plan_intervals(rollups, start_us, end_us, interval, now)
    try:
        to_datetime(start), to_datetime(end)
    except (ValueError, OverflowError):
        raise UsageError("The date range is outside the years 1 to 9999.") from None
    return start, end, interval, rollup


def _duration(seconds: int) -> str:
    for name, unit in (("day", DAY), ("hour", 3600), ("minute", 60)):
        if seconds % unit == 0:
            count = seconds // unit
            return f"one {name}" if count == 1 else f"{count} {name}s"
    return f"{seconds} seconds"


def parse_projects(values: Iterable[str]) -> tuple[int, ...] | None:
    """Distinct project ids, ascending; None for every project (none given, or ``-1``).

    :data:`INVALID_PROJECT` for a value that is not an integer, has more than
    :data:`MAX_ID_DIGITS` digits or is outside the ids' 64-bit range.
    """
    ids: set[int] = set()
    for value in values:
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_ID_DIGITS:
            raise UsageError(INVALID_PROJECT)
        number = int(text)
        if not -MAX_ID <= number <= MAX_ID:
            raise UsageError(INVALID_PROJECT)
        ids.add(number)
    if not ids or -1 in ids:
        return None
    return tuple(sorted(ids))


def outcomes(
    received: int, rejected: int, blacklisted: int, filters: Mapping[str, int]
) -> list[tuple[str, str, int]]:
    """``(outcome, reason, count)`` of one project in one interval, zeros left out."""
    rows = outcome_series(
        [received], [rejected], [blacklisted], {name: [n] for name, n in filters.items()}
    )
    return [(outcome, reason, series[0]) for outcome, reason, series in rows]


def outcome_series(
    received: Sequence[int],
    rejected: Sequence[int],
    blacklisted: Sequence[int],
    filters: Mapping[str, Sequence[int]],
) -> list[tuple[str, str, list[int]]]:
    """:func:`outcomes` interval by interval: ``(outcome, reason, series)``, all-zero ones left out.

    Every sequence has one value per interval (of one project).
    """
    if filters:
        explained = [sum(values) for values in zip(*filters.values(), strict=True)]
    else:
        explained = [0] * len(blacklisted)
    filtered = [max(b, e) for b, e in zip(blacklisted, explained, strict=True)]
    rows = [("rate_limited", NO_REASON, list(rejected))]
    rows += [("filtered", reason, list(series)) for reason, series in filters.items()]
    rows.append(
        (
            "filtered",
            NO_REASON,
            [max(0, b - e) for b, e in zip(blacklisted, explained, strict=True)],
        )
    )
    rows.append(
        (
            "accepted",
            NO_REASON,
            [max(0, r - j - f) for r, j, f in zip(received, rejected, filtered, strict=True)],
        )
    )
    return [row for row in rows if any(row[2])]


def _format(epoch: int) -> str:
    moment = to_datetime(epoch)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


def counted_outcomes(
    query: UsageQuery, cells: Mapping[tuple[int, int, int], int]
) -> Iterator[tuple[int, str, str, list[int]]]:
    """``(project_id, outcome, reason, series)`` of stored counts, as the filters let through.

    ``cells`` are ``{(project_id, stat code, bucket): n}``; buckets are those
    of ``query.rollup`` in ``[start, end)`` (others are ignored), summed into
    the query's intervals before the outcomes are derived (:func:`outcome_series`).
    Nothing when the category filter leaves out errors.
    """
    if not query.counts_errors:
        return
    stat_names = {STAT_CODES[name]: name for name in READ_STATS}
    count = len(query.intervals)
    start, end, interval = query.start, query.end, query.interval
    # Stored buckets summed into intervals, per project and stat.
    per_project: defaultdict[int, dict[str, list[int]]] = defaultdict(dict)
    for (project_id, code, bucket), value in cells.items():
        name = stat_names.get(code)
        if name is None or not start <= bucket < end:
            continue
        stats = per_project[project_id]
        series = stats.get(name)
        if series is None:
            series = stats[name] = [0] * count
        series[(bucket - start) // interval] += value
    zeros = [0] * count
    for project_id, stats in per_project.items():
        rows = outcome_series(
            stats.get("received", zeros),
            stats.get("rejected", zeros),
            stats.get("blacklisted", zeros),
            {name: stats[name] for name in FILTER_STATS if name in stats},
        )
        for outcome, reason, series in rows:
            if query.outcomes is not None and outcome not in query.outcomes:
                continue
            if query.reasons is not None and reason not in query.reasons:
                continue
            yield project_id, outcome, reason, series


def format_time(epoch: int) -> str:
    """Epoch seconds as the answers give times: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _format(epoch)


def parameter_values(params: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """The non-empty values of a repeatable parameter, in order (an empty one is absent)."""
    return _values(params, name)


def answer(query: UsageQuery, cells: Mapping[tuple[int, int, int], int]) -> dict[str, Any]:
    """The ``stats_v2`` answer from stored counts ``{(project_id, stat code, bucket): n}``.

    Buckets are those of ``query.rollup`` in ``[start, end)``; others are ignored.
    """
    count = len(query.intervals)
    groups: defaultdict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * count)
    for project_id, outcome, reason, series in counted_outcomes(query, cells):
        labels = {
            "outcome": outcome,
            "category": "error",
            "reason": reason,
            "project": project_id,
        }
        group = groups[tuple(labels[name] for name in query.group_by)]
        group[:] = [a + b for a, b in zip(group, series, strict=True)]
    if not query.group_by:
        groups.setdefault((), [0] * count)  # exactly one group, zero-filled if need be
    shaped = []
    # Keys are the ``by`` values in groupBy order: project ids sort as numbers.
    for key in sorted(groups):
        series = groups[key]
        if query.group_by and not any(series):
            continue
        total = sum(series)
        shaped.append(
            {
                "by": dict(zip(query.group_by, key, strict=True)),
                "totals": dict.fromkeys(query.fields, total),
                "series": {name: list(series) for name in query.fields},
            }
        )
    return {
        "start": _format(query.start),
        "end": _format(query.end),
        "intervals": [_format(epoch) for epoch in query.intervals],
        "groups": shaped,
    }
