from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.http import QueryDict
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from project_stats.serializers import (
    InvalidQuery,
    OrganizationStatsQuerySerializer,
    QueryParser,
    StatsQuerySerializer,
    render_series,
)

NOW = datetime(2024, 3, 5, 13, 37, 42, 500000, tzinfo=UTC)


def query(qs: str = "", *, known_envs: tuple[str, ...] = ("production",)) -> dict:
    serializer = StatsQuerySerializer(data=QueryDict(qs), context={"now": NOW})
    return serializer.query(environment_exists=lambda env: env in known_envs)


def error(qs: str, **kwargs: object) -> str:
    with pytest.raises(InvalidQuery) as info:
        query(qs, **kwargs)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    return str(info.value.detail)


def test_defaults_are_the_last_day_hourly() -> None:
    q = query()
    assert q["stat"] == "received"
    assert q["end"] == NOW
    assert q["start"] == NOW - timedelta(seconds=86399)
    assert q["rollup"] == 3600
    assert q["environment"] is None


def test_empty_parameters_mean_absent() -> None:
    assert query("stat=&since=&until=&resolution=&environment=") == query()


def test_epoch_seconds_in_every_spelling_float_reads() -> None:
    expected = datetime(2018, 9, 9, 21, 0, tzinfo=UTC)
    for text in ("1536526800", "1536526800.0", "1.5365268e9", "1536526800e0", " 1536526800 "):
        assert query(f"until={text}&since=1536526000")["end"] == expected


def test_iso_8601_is_accepted_naive_as_utc() -> None:
    q = query("since=2024-03-05T10:00:00Z&until=2024-03-05T12:00:00%2B01:00")
    assert q["start"] == datetime(2024, 3, 5, 10, tzinfo=UTC)
    assert q["end"] == datetime(2024, 3, 5, 11, tzinfo=UTC)
    assert query("until=2024-03-05T12:00:00")["end"] == datetime(2024, 3, 5, 12, tzinfo=UTC)


def test_since_alone_runs_to_now_and_until_alone_a_day_back() -> None:
    assert query("since=1709640000")["end"] == NOW
    until = NOW - timedelta(days=8)
    q = query(f"until={until.timestamp()}")
    assert q["start"] == until - timedelta(seconds=86399)
    # Older than the hourly retention: daily points by the optimal-rollup rule.
    assert q["rollup"] == 86400


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("1h", 3600), ("60m", 3600), ("3600s", 3600), ("1d", 86400)]
)
def test_resolution_spellings(text: str, seconds: int) -> None:
    assert query(f"resolution={text}&since={NOW.timestamp() - 600}")["rollup"] == seconds


@pytest.mark.parametrize("text", ["1H", "1w", "0s", "-1h", "60s", "2h", "1.0h", "h", "１h"])
def test_bad_resolution(text: str) -> None:
    assert error(f"resolution={text}") == "Invalid resolution"


@pytest.mark.parametrize(
    ("qs", "message"),
    [
        ("stat=nope", "Invalid stat: nope"),
        ("until=yesterday", "until must be a numeric timestamp."),
        ("since=yesterday", "since must be a numeric timestamp"),
        ("since=1709640000&until=1709630000", "start must be before or equal to end"),
        ("since=nan", "since must be a finite number of seconds since the UNIX epoch"),
        ("until=inf", "until must be a finite number of seconds since the UNIX epoch"),
        ("until=-Infinity", "until must be a finite number of seconds since the UNIX epoch"),
        ("since=1e400", "since must be a finite number of seconds since the UNIX epoch"),
    ],
)
def test_messages(qs: str, message: str) -> None:
    assert error(qs) == message


@pytest.mark.parametrize(
    "qs", ["until=1e20", "since=1709640000000", "until=-1e15", "since=9999-12-31T23:59:59-01:00"]
)
def test_out_of_range_times_name_the_parameter(qs: str) -> None:
    name = qs.split("=")[0]
    message = error(qs)
    assert message.startswith(f"{name} is out of range")


def test_millisecond_timestamps_get_a_hint() -> None:
    assert "milliseconds" in error("until=1709640000000")


def test_errors_come_in_sentrys_order() -> None:
    bad = {
        "stat": "stat=nope",
        "resolution": "resolution=1w",
        "until": "until=x",
        "since": "since=x",
    }
    assert error("&".join(bad.values())) == "Invalid stat: nope"
    assert error("&".join([bad["resolution"], bad["until"], bad["since"]])) == "Invalid resolution"
    assert error("&".join([bad["until"], bad["since"]])) == "until must be a numeric timestamp."
    # The unknown environment's 404 comes after stat and before resolution.
    with pytest.raises(NotFound):
        query("stat=generated&environment=nowhere&resolution=1w&until=x")
    assert error("stat=nope&environment=nowhere") == "Invalid stat: nope"


def test_environment_only_for_generated() -> None:
    assert query("stat=generated&environment=production")["environment"] == "production"
    assert query("stat=received&environment=nowhere")["environment"] is None
    with pytest.raises(NotFound):
        query("stat=generated&environment=staging")


def test_too_many_points_whether_chosen_or_given() -> None:
    ninety_days = NOW.timestamp() - 90 * 86400
    assert "the limit is 10000" in error(f"since={ninety_days}&resolution=10s")
    assert "777601 points" in error(f"since={ninety_days}&resolution=10s")
    message = error("since=0")
    assert "limit is 10000" in message and "1d" in message


def test_max_points_follows_settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_STATS = {"MAX_POINTS": 24}
    query()  # exactly 24 points is fine
    assert "limit is 24" in error(f"since={NOW.timestamp() - 86400}")


def test_render_series_int_and_float(settings) -> None:  # type: ignore[no-untyped-def]
    points = [(1536526800, 1254), (1536530400, 0)]
    assert render_series(points) == [[1536526800, 1254], [1536530400, 0]]
    settings.PROJECT_STATS = {"TIMESTAMP_FORMAT": "float"}
    rendered = render_series(points)
    assert rendered == [[1536526800.0, 1254], [1536530400.0, 0]]
    assert isinstance(rendered[0][0], float)


# The views parse with QueryParser (fields built once); the serializers declare
# the fields and validate the same way when used as DRF serializers.
parameter_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["received", "generated", "nope", "10s", "1h", "60m", "1d", "1w", "organization"]
        + ["project", "0", "1709640000", "1709630000.5", "2024-03-05T10:00:00Z", "nan", "1e20"]
        + ["a\x00b", "\ud800", " ", "1709640000000"]
    ),
)
queries = st.dictionaries(
    st.sampled_from(["stat", "since", "until", "resolution", "environment", "group", "x"]),
    parameter_text,
)


@given(data=queries, organization=st.booleans())
def test_the_parser_validates_as_the_serializer_does(data: dict, organization: bool) -> None:
    serializer_class = OrganizationStatsQuerySerializer if organization else StatsQuerySerializer
    serializer = serializer_class(data=data, context={"now": NOW})
    parsed = QueryParser.of(serializer_class).parse(data, now=NOW)
    assert parsed.is_valid() == serializer.is_valid()
    assert parsed.errors == serializer.errors
    assert parsed.validated_data == (serializer.validated_data if serializer.is_valid() else {})
    assert parsed.initial_data == serializer.initial_data


def test_a_parser_is_built_once_per_query_class() -> None:
    assert QueryParser.of(StatsQuerySerializer) is QueryParser.of(StatsQuerySerializer)
    assert QueryParser.of(StatsQuerySerializer) is not QueryParser.of(
        OrganizationStatsQuerySerializer
    )


def test_a_request_builds_no_serializer(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The query is parsed without building a serializer (and deep-copying its fields)."""
    built = []
    original = serializers.Serializer.__init__

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(type(self))
        original(self, *args, **kwargs)

    path = reverse(
        "project_stats:project-stats",
        kwargs={"organization_id_or_slug": "some-org", "project_id_or_slug": "some-project"},
    )
    client.get(path + "?stat=received")  # the parsers are built on first use
    monkeypatch.setattr(serializers.Serializer, "__init__", counting)
    for query_string in ("", "?stat=nope", "?resolution=10s&since=1709640000"):
        response = client.get(path + query_string, HTTP_AUTHORIZATION="Bearer psk_unknown")
        assert response.status_code == 401
    assert built == []
