"""Query-parameter parsing for the stats endpoints, and output shaping.

Errors come out in Sentry's order (stat, environment, resolution, until,
since, then the range as a whole) as a single ``{"detail": "..."}`` message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.fields import SkipField, get_error_detail
from rest_framework.serializers import as_serializer_error

from . import tsdb
from .conf import project_stats_settings
from .constants import DEFAULT_STAT, ENVIRONMENT_STATS, MAX_TIME_LENGTH, STAT_CODES
from .models import Organization, Project
from .tsdb.rollups import earlier, format_resolution, parse_resolution, point_count, to_datetime

# Sentry's default window: one day minus one second, i.e. 24 hourly points.
DEFAULT_WINDOW = timedelta(seconds=86399)
NOT_FOUND = "The requested resource does not exist"


class InvalidQuery(ParseError):
    """400 with ``{"detail": message}``."""

    default_detail = "Invalid query"


class TimestampField(serializers.Field):  # type: ignore[type-arg]
    """Seconds since the UNIX epoch as Python's ``float`` reads them, or ISO 8601.

    Naive ISO 8601 datetimes are taken as UTC. Text longer than
    ``MAX_TIME_LENGTH`` characters is invalid.
    """

    default_error_messages = {
        "invalid": "{name} must be a numeric timestamp",
        "not_finite": "{name} must be a finite number of seconds since the UNIX epoch",
        "range": "{name} is out of range: give seconds since the UNIX epoch "
        "(milliseconds are too large)",
    }

    def __init__(self, *, invalid_message: str | None = None, **kwargs: Any) -> None:
        self.invalid_message = invalid_message
        super().__init__(**kwargs)

    def _fail(self, key: str) -> NoReturn:
        if key == "invalid" and self.invalid_message:
            raise serializers.ValidationError(self.invalid_message, code=key)
        self.fail(key, name=self.field_name)
        raise AssertionError  # pragma: no cover  (fail() always raises)

    def to_internal_value(self, data: Any) -> datetime:
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self._fail("invalid")
        if isinstance(data, str) and len(data) > MAX_TIME_LENGTH:
            self._fail("invalid")  # no time is written that long
        try:
            seconds = float(data)
        except (TypeError, ValueError):
            return self._parse_iso(str(data))
        if not math.isfinite(seconds):
            self._fail("not_finite")
        try:
            return to_datetime(seconds)
        except (ValueError, OverflowError):
            self._fail("range")

    def _parse_iso(self, text: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            self._fail("invalid")
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return to_datetime(value)  # also rejects offsets past datetime's range
        except (ValueError, OverflowError):
            self._fail("range")

    def to_representation(self, value: datetime) -> float:
        return value.timestamp()


class ResolutionField(serializers.Field):  # type: ignore[type-arg]
    """A configured rollup spelled as an integer and a unit: ``10s``, ``60m``, ``1h``, ``1d``."""

    default_error_messages = {"invalid": "Invalid resolution"}

    def to_internal_value(self, data: Any) -> int:
        try:
            seconds = parse_resolution(data)
        except ValueError:
            self.fail("invalid")
        if seconds not in {rollup for rollup, _ in project_stats_settings.ROLLUPS}:
            self.fail("invalid")
        return seconds

    def to_representation(self, value: int) -> str:
        return format_resolution(value)


class StatField(serializers.Field):  # type: ignore[type-arg]
    default_error_messages = {"invalid": "Invalid stat: {value}"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or data not in STAT_CODES:
            self.fail("invalid", value=data)
        return str(data)

    def to_representation(self, value: str) -> str:
        return value


class StatsQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """``stat``, ``since``, ``until``, ``resolution``, ``environment``.

    Validated data holds ``stat``, ``environment`` (or ``None``), ``start`` and
    ``end`` (aware UTC datetimes) and ``rollup`` (seconds). Context: ``now``.
    """

    # The order errors are reported in; "environment" stands for its 404.
    ERROR_ORDER: tuple[str, ...] = (
        "stat",
        "environment",
        "resolution",
        "until",
        "since",
        "non_field_errors",
    )

    stat = StatField(required=False, default=DEFAULT_STAT)
    since = TimestampField(required=False, invalid_message="since must be a numeric timestamp")
    until = TimestampField(required=False, invalid_message="until must be a numeric timestamp.")
    resolution = ResolutionField(required=False)
    # Longer names are never recorded, so they take the unknown environment's 404.
    environment = serializers.CharField(required=False, trim_whitespace=False)

    def __init__(self, *, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if data is None:
            super().__init__(**kwargs)  # the declaration only, as QueryParser builds it
        else:
            super().__init__(data=_cleaned(data), **kwargs)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return _validate_range(attrs, self.context.get("now") or timezone.now())

    def query(self, *, environment_exists: Callable[[str], bool]) -> dict[str, Any]:
        """The validated query, or the first error in Sentry's order as an APIException."""
        now = self.context.get("now") or timezone.now()
        parsed = QueryParser.of(type(self)).parse(self.initial_data, now=now)
        return parsed.query(environment_exists=environment_exists)


def _validate_range(attrs: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The whole query's checks once every field is valid: the range, its points."""
    end = attrs.pop("until", None) or now
    start = attrs.pop("since", None) or earlier(end, DEFAULT_WINDOW)
    if start > end:
        raise serializers.ValidationError("start must be before or equal to end")
    rollup = attrs.pop("resolution", None) or tsdb.get_optimal_rollup(start, end, now=now)
    points = point_count(start, end, rollup)
    limit = project_stats_settings.MAX_POINTS
    if points > limit:
        raise serializers.ValidationError(
            f"The query would return {points} points at resolution "
            f"{format_resolution(rollup)}; the limit is {limit} (MAX_POINTS). "
            "Narrow since/until or choose a coarser resolution."
        )
    if attrs["stat"] not in ENVIRONMENT_STATS:
        attrs.pop("environment", None)
    attrs.setdefault("environment", None)
    attrs.update(start=start, end=end, rollup=rollup)
    return attrs


class OrganizationStatsQuerySerializer(StatsQuerySerializer):
    """The project query plus ``group``: ``organization`` (default) or ``project``."""

    ERROR_ORDER = (*StatsQuerySerializer.ERROR_ORDER[:-1], "group", "non_field_errors")
    GROUPS = ("organization", "project")

    group = serializers.CharField(required=False, default="organization")

    def validate_group(self, value: str) -> str:
        if value not in self.GROUPS:
            raise serializers.ValidationError(
                f"Invalid group: {value} (use {' or '.join(self.GROUPS)})"
            )
        return value


def _cleaned(data: Mapping[str, Any]) -> dict[str, Any]:
    """An empty parameter means the same as an absent one; the last value wins."""
    return {key: data.get(key) for key in data if data.get(key) not in ("", None)}


def _first_message(messages: Any) -> str:
    return str(messages[0] if isinstance(messages, list) else messages)


class ParsedQuery:
    """One request's parsed query: what a validated serializer would hold."""

    __slots__ = ("error_order", "errors", "initial_data", "validated_data")

    def __init__(
        self,
        initial_data: dict[str, Any],
        validated_data: dict[str, Any],
        errors: dict[str, Any],
        error_order: tuple[str, ...],
    ) -> None:
        self.initial_data = initial_data
        self.validated_data = validated_data
        self.errors = errors
        self.error_order = error_order

    def is_valid(self) -> bool:
        return not self.errors

    def query(self, *, environment_exists: Callable[[str], bool]) -> dict[str, Any]:
        """The validated query, or the first error in Sentry's order as an APIException."""
        errors = self.errors
        stat = self.initial_data.get("stat", DEFAULT_STAT)
        environment = self.initial_data.get("environment")
        for name in self.error_order:
            if name == "environment":
                if (
                    "stat" not in errors
                    and stat in ENVIRONMENT_STATS
                    and isinstance(environment, str)
                    and not environment_exists(environment)
                ):
                    raise NotFound(NOT_FOUND)
            elif name in errors:
                raise InvalidQuery(_first_message(errors[name]))
        for messages in errors.values():  # any other, e.g. NUL in an environment: 400
            raise InvalidQuery(_first_message(messages))
        return dict(self.validated_data)


class QueryParser:
    """A query serializer's validation, with its fields built once.

    A DRF serializer deep-copies its declared fields every time one is
    created, which on the read path cost about a sixth of a request. This
    builds one serializer of ``serializer_class`` for its bound fields and
    ``validate_<field>`` methods, then validates each request's parameters as
    ``Serializer.is_valid`` would: field by field, then the whole query, with
    the same messages. Nothing of a request is stored on the parser, so one
    instance serves every request and thread.
    """

    _parsers: dict[type[StatsQuerySerializer], QueryParser] = {}

    def __init__(self, serializer_class: type[StatsQuerySerializer]) -> None:
        declared = serializer_class()
        self.error_order = serializer_class.ERROR_ORDER
        self.fields = [
            (
                str(field.field_name),
                str(field.source),
                field,
                getattr(declared, f"validate_{field.field_name}", None),
            )
            for field in declared._writable_fields
        ]

    @classmethod
    def of(cls, serializer_class: type[StatsQuerySerializer]) -> QueryParser:
        """The parser of ``serializer_class``, built on first use."""
        parser = cls._parsers.get(serializer_class)
        if parser is None:
            parser = cls._parsers[serializer_class] = cls(serializer_class)
        return parser

    def parse(self, data: Mapping[str, Any], *, now: datetime) -> ParsedQuery:
        """``data`` (e.g. ``request.query_params``) parsed as of ``now``."""
        initial = _cleaned(data)
        validated: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for name, source, field, validate_method in self.fields:
            try:
                value = field.run_validation(field.get_value(initial))
                if validate_method is not None:
                    value = validate_method(value)
            except serializers.ValidationError as exc:
                errors[name] = exc.detail
            except DjangoValidationError as exc:
                errors[name] = get_error_detail(exc)
            except SkipField:
                pass
            else:
                validated[source] = value
        if not errors:
            try:
                validated = _validate_range(validated, now)
            except (serializers.ValidationError, DjangoValidationError) as exc:
                errors = dict(as_serializer_error(exc))
                validated = {}
        return ParsedQuery(initial, validated if not errors else {}, errors, self.error_order)


def check_total_points(query: Mapping[str, Any], projects: int) -> None:
    """400 unless ``projects`` series of ``query`` fit in ``MAX_TOTAL_POINTS`` together.

    For ``group=project``: ``MAX_POINTS`` bounds each series, this the answer.
    """
    points = point_count(query["start"], query["end"], query["rollup"])
    total, limit = projects * points, project_stats_settings.MAX_TOTAL_POINTS
    if total > limit:
        raise InvalidQuery(
            f"group=project would return {projects} series of {points} points, {total} "
            f"points in all; the limit is {limit} (MAX_TOTAL_POINTS). Select fewer projects "
            "with projectID, narrow since/until or choose a coarser resolution."
        )


class OrganizationSummarySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Organization
        fields = ["slug", "name"]
        read_only_fields = fields


class ProjectSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A project as Sentry's organization project list shows it (a subset)."""

    id = serializers.CharField(read_only=True)
    # ISO 8601 in UTC as Sentry writes it, whatever the site's TIME_ZONE or
    # REST_FRAMEWORK["DATETIME_FORMAT"].
    dateCreated = serializers.DateTimeField(  # noqa: N815
        source="date_added", read_only=True, format=ISO_8601, default_timezone=UTC
    )
    organization = OrganizationSummarySerializer(read_only=True)

    class Meta:
        model = Project
        fields = ["id", "slug", "name", "dateCreated", "organization"]
        read_only_fields = fields


def render_series(points: list[tuple[int, int]]) -> list[list[int | float]]:
    """``[timestamp, count]`` pairs with timestamps as ``TIMESTAMP_FORMAT`` says."""
    if project_stats_settings.TIMESTAMP_FORMAT == "float":
        return [[float(timestamp), count] for timestamp, count in points]
    return [[timestamp, count] for timestamp, count in points]
