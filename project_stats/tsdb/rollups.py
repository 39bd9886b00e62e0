"""Bucket arithmetic: pure functions, no database, no settings.

Times travel as integer microseconds since the epoch so that series lengths
are exact (Sentry steps a ``datetime`` back by ``timedelta``s, i.e. works at
microsecond precision too); bucket starts are whole epoch seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

Rollups = Sequence[tuple[int, int]]
"""``(seconds per bucket, buckets kept)`` pairs, finest first."""

TimeLike = datetime | int | float

MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // datetime.resolution
_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // datetime.resolution
_RESOLUTION_RE = re.compile(r"([0-9]{1,12})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def to_micros(value: TimeLike) -> int:
    """Microseconds since the epoch of an aware datetime or epoch seconds.

    ``ValueError`` for naive datetimes, booleans, NaN, infinities and times
    outside what ``datetime`` can represent (e.g. millisecond timestamps).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: give an aware (UTC) datetime")
        return (value - _EPOCH) // datetime.resolution
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a finite time: {value!r}")
    micros = value * MICROS if isinstance(value, int) else round(value * MICROS)
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValueError(f"time out of range: {value!r}")
    return int(micros)


def to_datetime(value: TimeLike) -> datetime:
    """The aware UTC datetime of an aware datetime or epoch seconds."""
    return _EPOCH + timedelta(microseconds=to_micros(value))


def earlier(value: datetime, delta: timedelta) -> datetime:
    """``value - delta``, or the earliest time a ``datetime`` holds if that is before it."""
    try:
        return value - delta
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def epoch_to_datetime(epoch: int) -> datetime:
    """The aware UTC datetime of whole epoch seconds (a bucket start)."""
    return datetime.fromtimestamp(epoch, UTC)


def normalize_to_epoch(epoch: int, rollup: int) -> int:
    """Start of the ``rollup``-second bucket holding whole epoch second ``epoch``."""
    return epoch - epoch % rollup


def bucket_start(value: TimeLike, rollup: int) -> int:
    """Epoch seconds of the start of the bucket holding ``value``."""
    return normalize_to_epoch(to_micros(value) // MICROS, rollup)


def point_count(start: TimeLike, end: TimeLike, rollup: int) -> int:
    """How many points ``series(start, end, rollup)`` has, without building it."""
    span = to_micros(end) - to_micros(start)
    if span < 0:
        return 0
    return span // (rollup * MICROS) + 1


def series(start: TimeLike, end: TimeLike, rollup: int) -> list[int]:
    """Bucket starts of Sentry's series for ``[start, end]``, ascending.

    Starting from ``end``, step back one rollup at a time while the stepped
    time is still ``>= start``: the bucket holding ``end`` is always the last
    point; the one holding ``start`` is included only when a step lands on or
    after ``start``. Empty when ``start > end``.
    """
    n = point_count(start, end, rollup)
    last = bucket_start(end, rollup)
    return [last - (n - 1 - i) * rollup for i in range(n)]


def optimal_rollup(rollups: Rollups, start: TimeLike, end: TimeLike, now: TimeLike) -> int:
    """The finest rollup that spans ``end - start`` and whose retention covers ``end``.

    A rollup ``(r, n)`` qualifies when ``r * n >= end - start`` (whole seconds,
    as Sentry) and ``end >= now - r * n``; when none does, the coarsest. Sentry
    checks the span only, so a short window days ago gets buckets that have
    already expired.
    """
    span = to_micros(end) // MICROS - to_micros(start) // MICROS
    end_s = to_micros(end) // MICROS
    now_s = to_micros(now) // MICROS
    for rollup, samples in rollups:
        retention = rollup * samples
        if retention >= span and end_s >= now_s - retention:
            return rollup
    return rollups[-1][0]


def parse_resolution(value: str) -> int:
    """Seconds of a resolution such as ``10s``, ``60m``, ``1h``, ``1d``.

    An integer and one lower-case unit; ``ValueError`` otherwise or for zero.
    """
    match = _RESOLUTION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"Invalid resolution: {value!r}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"Invalid resolution: {value!r}")
    return seconds


def format_resolution(seconds: int) -> str:
    """The shortest ``parse_resolution`` spelling of ``seconds`` (``3600`` -> ``1h``)."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_time(value: str) -> datetime:
    """An aware UTC datetime from epoch seconds or ISO 8601 text (``Z`` or an offset).

    ISO 8601 without an offset is taken as UTC. ``ValueError`` otherwise.
    """
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ValueError(f"not a time: {value!r}")
    for number_type in (int, float):
        try:
            number = number_type(text)
        except ValueError:
            continue
        return to_datetime(number)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not epoch seconds or ISO 8601: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return to_datetime(parsed)


def retention_start(rollup: int, samples: int, now: TimeLike) -> int:
    """The first whole epoch second still inside ``now - rollup * samples .. now``.

    A bucket is expired (Sentry's TTL) when it starts before ``now - rollup *
    samples``; for whole-second bucket starts that is ``start < retention_start``.
    """
    return -(-(to_micros(now) - rollup * samples * MICROS) // MICROS)


def align_up(epoch: int, rollup: int) -> int:
    """The first ``rollup`` bucket start at or after whole epoch second ``epoch``."""
    return -(-epoch // rollup) * rollup


def closed_buckets(since: TimeLike, until: TimeLike, rollup: int, now: TimeLike) -> range:
    """Starts of the closed ``rollup`` buckets overlapping ``[since, until)``.

    A bucket ``[b, b + rollup)`` overlaps when ``b < until`` and ``b + rollup >
    since``; it is closed when ``b + rollup <= now``. Empty when ``since >= until``.
    """
    since_us, until_us = to_micros(since), to_micros(until)
    if since_us >= until_us:
        return range(0)
    width = rollup * MICROS
    first = since_us // width * rollup
    end = -(-until_us // width) * rollup
    end = min(end, bucket_start(now, rollup))
    return range(first, max(first, end), rollup)


def chunk_span(target: int, source: int, source_buckets: int) -> int:
    """Seconds of target buckets per chunk: about ``source_buckets`` source buckets per series.

    Always whole target buckets, at least one.
    """
    per_target = target // source
    return target * max(1, source_buckets // per_target)
