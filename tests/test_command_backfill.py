"""``project_stats_backfill``: data placed relative to the real clock, in closed hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from project_stats import tsdb
from project_stats.models import EventCount, Project
from project_stats.tsdb.rollups import bucket_start

from .factories import ProjectFactory

pytestmark = pytest.mark.django_db


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def hours() -> list[datetime]:
    """Starts of the three hours before the current one: closed whatever the clock does."""
    current = bucket_start(timezone.now(), 3600)
    return [datetime.fromtimestamp(current - n * 3600, UTC) for n in (3, 2, 1)]


def hourly(project: Project | None = None) -> dict[tuple[str, str, datetime], int]:
    rows = EventCount.objects.filter(rollup=3600)
    if project is not None:
        rows = rows.filter(project=project)
    return {(r.get_stat_display(), r.environment, r.timestamp): r.count for r in rows}


def all_rows() -> list[tuple[object, ...]]:
    return sorted(EventCount.objects.values_list())


def fill_10s(project: Project, hours: list[datetime], stat: str = "received") -> None:
    tsdb.incr_many(
        [
            (project, stat, hour + timedelta(seconds=10 * i), 1 + i % 4)
            for hour in hours
            for i in range(360)
        ],
        rollups=[10],
    )


def run(*args: str, stdout: StringIO | None = None) -> str:
    out = stdout or StringIO()
    call_command("project_stats_backfill", *args, stdout=out)
    return out.getvalue()


def span(hours: list[datetime]) -> list[str]:
    return [
        "--since",
        hours[0].isoformat(),
        "--until",
        (hours[-1] + timedelta(hours=1)).isoformat(),
    ]


def test_rebuilds_hours_from_10s_and_reports(project: Project, hours: list[datetime]) -> None:
    fill_10s(project, hours)
    output = run("--rollup", "1h", *span(hours))
    per_hour = sum(1 + i % 4 for i in range(360))
    assert hourly() == {("received", "", hour): per_hour for hour in hours}
    assert "1h from 10s" in output
    assert "3 buckets examined, 3 rows written, in " in output
    assert "[#" not in output  # not a terminal: no progress bar

    again = run("--rollup", "1h", *span(hours))
    assert "3 buckets examined, 0 rows written" in again
    assert hourly() == {("received", "", hour): per_hour for hour in hours}


def test_epoch_seconds_work_as_well_as_iso(project: Project, hours: list[datetime]) -> None:
    fill_10s(project, hours)
    run(
        "--rollup",
        "1h",
        "--since",
        str(int(hours[1].timestamp())),
        "--until",
        str(hours[2].timestamp()),
    )
    assert [key[2] for key in hourly()] == [hours[1]]


def test_default_range_is_the_last_closed_hour_then_its_day(
    project: Project, hours: list[datetime]
) -> None:
    fill_10s(project, hours)
    output = run()
    if bucket_start(timezone.now(), 3600) != hours[2].timestamp() + 3600:
        pytest.skip("the hour turned during the test; the default range moved with it")
    assert list(hourly()) == [("received", "", hours[2])]
    assert "1h from 10s" in output and "1d from 1h" in output


def test_filters_restrict(project: Project, other_project: Project, hours: list[datetime]) -> None:
    for p in (project, other_project):
        for stat in ("received", "rejected"):
            fill_10s(p, hours[:1], stat)
    run("--rollup", "1h", *span(hours), "--project", str(project), "--stat", "rejected")
    assert list(hourly()) == [("rejected", "", hours[0])]
    assert not hourly(other_project)
    run("--rollup", "1h", *span(hours), "--project", str(other_project), "--project", str(project))
    assert len(hourly(project)) == len(hourly(other_project)) == 2


def test_dry_run_writes_nothing(project: Project, hours: list[datetime]) -> None:
    fill_10s(project, hours)
    before = all_rows()
    output = run("--rollup", "1h", *span(hours), "--dry-run")
    assert all_rows() == before
    assert "3 rows would be written (dry run: nothing written)" in output


def test_replace_corrects_an_inflated_count(
    settings, project: Project, hours: list[datetime]
) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"ROLLUPS": ((10, 6 * 360), (3600, 168), (86400, 90))}
    tsdb.incr(project, "received", timestamp=hours[1], count=4)
    tsdb.incr(project, "received", timestamp=hours[1], count=96, rollups=[3600])
    run("--rollup", "1h", *span(hours))
    assert hourly() == {("received", "", hours[1]): 100}
    run("--rollup", "1h", *span(hours), "--replace")
    assert hourly() == {("received", "", hours[1]): 4}


def test_progress_bar_on_a_terminal_only(project: Project, hours: list[datetime]) -> None:
    fill_10s(project, hours)
    terminal = Terminal()
    run("--rollup", "1h", *span(hours), stdout=terminal)
    assert "\r[" + "#" * 30 + "] 3/3 chunks\n" in terminal.getvalue()
    quiet = Terminal()
    call_command(
        "project_stats_backfill", "--rollup", "1h", *span(hours), verbosity=0, stdout=quiet
    )
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rollup", "7x"], "not a resolution"),
        (["--rollup", "1m"], "not configured"),
        (["--rollup", "10s"], "finest"),
        (["--rollup", "1h", "--source", "1d"], "does not divide"),
        (["--source", "5m"], "not configured"),
        (["--project", "nope/nope"], "no project"),
        (["--project", "no-slash"], "not ORG/SLUG"),
        (["--stat", "bogus"], "unknown stat"),
        (["--since", "2024-03-05", "--until", "2024-03-04"], "since is after until"),
        (["--since", "yesterday"], "neither epoch seconds nor ISO 8601"),
        (["--until", "nan"], "neither epoch seconds nor ISO 8601"),
    ],
)
def test_bad_input_is_a_command_error_and_writes_nothing(
    project: Project, hours: list[datetime], args: list[str], message: str
) -> None:
    fill_10s(project, hours)
    before = all_rows()
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert all_rows() == before


def test_a_project_filter_names_org_and_slug(hours: list[datetime]) -> None:
    # Same slug in two organizations: only the named one is rebuilt.
    a = ProjectFactory(slug="web")
    b = ProjectFactory(slug="web")
    for p in (a, b):
        fill_10s(p, hours[:1])
    run("--rollup", "1h", *span(hours), "--project", f"{b.organization.slug}/web")
    assert not hourly(a) and hourly(b)
