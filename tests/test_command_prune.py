"""``project_stats_prune``: rows placed well inside and well outside retention of the real clock."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from project_stats import tsdb
from project_stats.models import EventCount, Project

pytestmark = pytest.mark.django_db

RETENTION = {10: timedelta(hours=1), 3600: timedelta(hours=168), 86400: timedelta(days=90)}


@pytest.fixture
def kept_and_expired(project: Project) -> dict[int, tuple[int, int]]:
    """Per rollup: (rows kept, rows expired), written on either side of the edge."""
    now = timezone.now()
    layout = {10: (2, 3), 3600: (1, 2), 86400: (3, 1)}
    for rollup, (kept, expired) in layout.items():
        edge = now - RETENTION[rollup]
        for i in range(kept):
            tsdb.incr(
                project,
                "received",
                timestamp=edge + (i + 1) * timedelta(seconds=rollup) + timedelta(minutes=5),
                rollups=[rollup],
            )
        for i in range(expired):
            tsdb.incr(
                project,
                "received",
                timestamp=edge - (i + 2) * timedelta(seconds=rollup),
                rollups=[rollup],
            )
    return layout


def run(*args: str, **options: object) -> str:
    out = StringIO()
    call_command("project_stats_prune", *args, stdout=out, **options)
    return out.getvalue()


def rows_per_rollup() -> dict[int, int]:
    return {r: EventCount.objects.filter(rollup=r).count() for r in RETENTION}


def test_dry_run_counts_and_deletes_nothing(kept_and_expired: dict[int, tuple[int, int]]) -> None:
    before = rows_per_rollup()
    output = run("--dry-run")
    assert rows_per_rollup() == before
    assert "10s: 3 rows expired (dry run: nothing deleted)" in output
    assert "1h: 2 rows expired" in output
    assert "1d: 1 rows expired" in output
    assert "6 rows expired (dry run: nothing deleted) in " in output


def test_deletes_what_expired_and_keeps_the_rest(
    kept_and_expired: dict[int, tuple[int, int]],
) -> None:
    output = run()
    assert rows_per_rollup() == {r: kept for r, (kept, _) in kept_and_expired.items()}
    assert "10s: 3 rows deleted" in output and "1h: 2 rows deleted" in output
    assert "6 rows deleted in " in output
    assert "0 rows deleted in " in run()


def test_quiet_at_verbosity_zero(kept_and_expired: dict[int, tuple[int, int]]) -> None:
    assert run(verbosity=0) == ""
    assert rows_per_rollup() == {r: kept for r, (kept, _) in kept_and_expired.items()}
