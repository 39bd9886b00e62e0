"""Sentry's ``stats-summary``: one total per project, category and outcome, as JSON or CSV.

Plain functions over plain values: no DRF, no SQL, no settings. The
parameters, the outcome and reason mapping and the intervals are those of
``stats_v2`` (:mod:`project_stats.usage`); the counts are summed over the
whole range per project instead of being kept per interval. Outcomes are
derived interval by interval first, exactly as ``stats_v2`` derives them, so
that both endpoints' totals agree for the same range and interval.

Differences from ``stats_v2``: one ``field`` (the totals are keyed
``sum(quantity)`` whichever is asked, both being the event count), no
``groupBy``, Sentry's summary categories (``error``, ``transaction``,
``attachment``, ``replays``, ``profiles``; only ``error`` holds counts, the
others answer an empty ``stats`` list), an ``interval`` of at least an hour,
an explicit ``end`` that is inclusive, and ``download``.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import usage

CATEGORIES = ("error", "transaction", "attachment", "replays", "profiles")
MIN_INTERVAL = 3600
TOTAL_FIELD = "sum(quantity)"
CSV_FILENAME = "stats_summary.csv"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def parse(
    params: Mapping[str, Sequence[str]], *, now: datetime, rollups: Sequence[tuple[int, int]]
) -> tuple[usage.UsageQuery, bool]:
    """``(query, download)`` from query parameters (``{name: [values]}``).

    :class:`~project_stats.usage.UsageError` for the first bad parameter, in
    this order: ``field``, ``category``, ``outcome``, ``project``,
    ``download``, the range, ``interval``, the number of intervals. The
    messages are ``stats_v2``'s. The query is grouped by project.
    """
    fields = usage.parse_fields(params)
    categories = usage.parse_categories(params, CATEGORIES)
    outcomes = usage.parse_outcomes(params)
    project_ids = usage.parse_projects(usage.parameter_values(params, "project"))
    download = parse_download(params.get("download", ()))
    start, end, interval, rollup = usage.parse_window(
        params, now=now, rollups=rollups, inclusive_end=True, min_interval=MIN_INTERVAL
    )
    query = usage.UsageQuery(
        fields=fields,
        group_by=("project",),
        categories=categories,
        outcomes=outcomes,
        reasons=frozenset(usage.parameter_values(params, "reason")) or None,
        project_ids=project_ids,
        start=start,
        end=end,
        interval=interval,
        rollup=rollup,
    )
    return query, download


def parse_download(values: Sequence[str]) -> bool:
    """``download``: ``true``/``1``/``yes`` or ``false``/``0``/``no``, any case; absent: false."""
    given = [value for value in values if value != ""]
    if not given:
        return False
    text = given[-1].lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise usage.UsageError(f'Invalid download: "{given[-1]}" (use true or false)')


def _category_stats(counted: Mapping[str, int]) -> dict[str, Any]:
    outcomes = {outcome: counted.get(outcome, 0) for outcome in usage.OUTCOMES}
    dropped = sum(n for outcome, n in outcomes.items() if outcome != "accepted")
    return {
        "category": "error",
        "outcomes": outcomes,
        "totals": {"dropped": dropped, TOTAL_FIELD: outcomes["accepted"] + dropped},
    }


def answer(
    query: usage.UsageQuery,
    cells: Mapping[tuple[int, int, int], int],
    projects: Sequence[tuple[int, str]],
) -> dict[str, Any]:
    """The ``stats-summary`` answer for ``projects`` (``(id, slug)``) from stored counts.

    ``cells`` are ``{(project_id, stat code, bucket): n}`` as for
    :func:`project_stats.usage.answer`. Projects are listed by id, each
    with its zeros when it has no counts; every outcome is present;
    ``dropped`` is every outcome but ``accepted``. ``start`` and ``end`` are
    the counted range, ``end`` exclusive.
    """
    totals: defaultdict[int, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for project_id, outcome, _, series in usage.counted_outcomes(query, cells):
        totals[project_id][outcome] += sum(series)
    listed = []
    for pk, slug in sorted(projects):
        stats = [_category_stats(totals.get(pk, {}))] if query.counts_errors else []
        listed.append({"id": str(pk), "slug": slug, "stats": stats})
    return {
        "start": usage.format_time(query.start),
        "end": usage.format_time(query.end),
        "projects": listed,
    }


def csv_columns(category: str) -> list[str]:
    """The CSV columns of a category: ``<outcome>_<category>s``, ``dropped_``, ``total_``."""
    plural = f"{category}s"
    return [
        *(f"{outcome}_{plural}" for outcome in usage.OUTCOMES),
        f"dropped_{plural}",
        f"total_{plural}",
    ]


def to_csv(summary: Mapping[str, Any], categories: Sequence[str]) -> str:
    """The answer as CSV: a header, then one row per project (by id).

    Columns ``project_id``, ``project_slug``, then :func:`csv_columns` of
    each of ``categories`` (the view passes ``error`` when the query counts
    errors, else none). Written by :mod:`csv`, so a slug holding a comma, a
    quote or a line break is quoted.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["project_id", "project_slug", *(c for name in categories for c in csv_columns(name))]
    )
    for project in summary["projects"]:
        by_category = {stats["category"]: stats for stats in project["stats"]}
        row: list[Any] = [project["id"], project["slug"]]
        for name in categories:
            stats = by_category.get(name)
            if stats is None:
                row += [0] * (len(usage.OUTCOMES) + 2)
                continue
            row += [stats["outcomes"][outcome] for outcome in usage.OUTCOMES]
            row += [stats["totals"]["dropped"], stats["totals"][TOTAL_FIELD]]
        writer.writerow(row)
    return out.getvalue()


def csv_categories(query: usage.UsageQuery) -> list[str]:
    """The categories the CSV has columns for: ``error`` when the query counts errors."""
    return ["error"] if query.counts_errors else []
