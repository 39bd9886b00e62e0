"""Junk arguments to every management command: a ``CommandError``, and nothing written.

Arguments are drawn from each command's own options mixed with junk
values; an invocation that happens to be valid may run, but nothing may
fail any other way, and a refused one must leave the database as it was.
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from project_stats import tsdb
from project_stats.models import ApiToken, EventCount, Organization, OrganizationMember, Project
from project_stats.tsdb.rollups import parse_time

from .factories import OrganizationMemberFactory, ProjectFactory

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)
NEAR = [
    st.integers(-86400, 86400).map(lambda s: str(int(NOW.timestamp()) + s)),
    st.integers(-86400, 86400).map(lambda s: (NOW + timedelta(seconds=s)).isoformat()),
]
# Each command's options, with values it accepts: junk is mixed in below.
OPTIONS: dict[str, dict[str, list[st.SearchStrategy[str]] | None]] = {
    "project_stats_token": {
        "--scope": [st.sampled_from(["project:read", "org:read"])],
        "--expires-in-days": [st.sampled_from(["1", "30"])],
        "--name": [st.just("ci")],
    },
    "project_stats_backfill": {
        "--since": NEAR,
        "--until": NEAR,
        "--rollup": [st.sampled_from(["1h", "1d"])],
        "--source": [st.sampled_from(["10s", "1h"])],
        "--project": [st.just("org-x/web")],
        "--stat": [st.sampled_from(["received", "generated"])],
        "--replace": None,
        "--dry-run": None,
    },
    "project_stats_prune": {"--dry-run": None},
    "project_stats_demo": {
        "--seed": [st.just("1")],
        "--days": [st.just("1")],
        "--now": NEAR,
        "--password": [st.just("pw")],
    },
}
# Any text is a fine password: junk there only makes valid (slow) demo runs.
ANYTHING_GOES = {"--password"}
junk = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "-",
            "--",
            "\x00",
            "nan",
            "inf",
            "-1",
            "0",
            "1e400",
            "9" * 30,
            "10s",
            "60m",
            "7x",
            "project:read",
            "org:nope",
            "bogus",
            "alice",
            "acme/web",
            "org-x/",
            "/web",
            "a/b/c",
            "2024-02-30T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59+14:00",
            "-62135596800",
        ]
    ),
)


@st.composite
def arguments(draw: st.DrawFn, command: str) -> list[str]:
    """Options with good values and flags, around at least one junk value or stray token."""
    good: list[st.SearchStrategy[list[str]]] = []
    bad: list[st.SearchStrategy[list[str]]] = [junk.map(lambda j: [j])]
    for option, valid in OPTIONS[command].items():
        if valid is None:
            good.append(st.just([option]))
        else:
            good.append(st.tuples(st.just(option), st.one_of(*valid)).map(list))
            if option not in ANYTHING_GOES:
                bad.append(st.tuples(st.just(option), junk).map(list))
    parts = draw(st.lists(st.one_of(*good, *bad), max_size=4))
    parts.insert(draw(st.integers(0, len(parts))), draw(st.one_of(*bad)))
    return [arg for part in parts for arg in part]


def state() -> list[list[Any]]:
    """Everything the commands could write."""
    models: list[Any] = [
        EventCount,
        ApiToken,
        Organization,
        Project,
        OrganizationMember,
        get_user_model(),
    ]
    return [list(model.objects.order_by("pk").values()) for model in models]


def spans_long(args: list[str]) -> bool:
    """Whether the args ask backfill for more than a few days (valid, but slow)."""
    times = {"--since": NOW, "--until": NOW}
    for option, value in zip(args, args[1:], strict=False):
        if option in times:
            with contextlib.suppress(ValueError):
                times[option] = parse_time(value)
    return abs(times["--until"] - times["--since"]) > timedelta(days=3)


@pytest.fixture
def data() -> None:
    project = ProjectFactory(organization__slug="org-x", slug="web")
    OrganizationMemberFactory(organization=project.organization, user__username="alice")
    tsdb.incr(project, "received", timestamp=NOW - timedelta(hours=2), count=3, rollups=[10])


@pytest.mark.usefixtures("data")
@pytest.mark.parametrize("command", sorted(OPTIONS))
@settings(max_examples=60)
@given(data=st.data())
def test_junk_arguments_are_a_command_error_and_write_nothing(
    command: str, data: st.DataObject
) -> None:
    args = data.draw(arguments(command))
    if command == "project_stats_token" and not args[0].startswith("-"):
        args = ["alice", *args] if data.draw(st.booleans()) else args
    if command == "project_stats_backfill" and spans_long(args):
        return
    if command == "project_stats_demo":
        args = ["--days", "1", *args]  # a valid run stays short; a later --days wins
    before = state()
    try:
        call_command(command, *args, stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as error:
        assert str(error)
        assert state() == before
