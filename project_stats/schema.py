"""OpenAPI description of the endpoints (drf-spectacular).

Parameter enums are built when the schema is generated, from the settings
in force then, not at import time.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from drf_spectacular.views import SpectacularRedocView

from .conf import project_stats_settings
from .constants import DEFAULT_STAT, STAT_CODES
from .serializers import ProjectSerializer
from .summary import CATEGORIES as SUMMARY_CATEGORIES
from .summary import TOTAL_FIELD as SUMMARY_TOTAL
from .tsdb.rollups import format_resolution
from .usage import CATEGORIES, FIELDS, GROUP_BY, OUTCOMES

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ERROR_SCHEMA, description=description)


def series_schema() -> dict[str, Any]:
    timestamp_type = "number" if project_stats_settings.TIMESTAMP_FORMAT == "float" else "integer"
    return {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"type": timestamp_type},
            "minItems": 2,
            "maxItems": 2,
        },
    }


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "project_stats.authentication.BearerTokenAuthentication"
    name = "auth_token"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token: `Authorization: Bearer <token>`.",
        }

    def get_security_requirement(self, auto_schema: AutoSchema) -> dict[str, list[str]]:
        scopes = getattr(auto_schema.view, "required_scopes", ())
        return {self.name: sorted(scopes)}


# The path parameters as Sentry's current schema names them: a segment of digits
# only is the numeric id, anything else the slug (which therefore never is digits only).
ORGANIZATION_PARAMETER = OpenApiParameter(
    "organization_id_or_slug",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The ID or slug of the organization the resource belongs to: "
    "digits only are the numeric ID, anything else the slug.",
)
PROJECT_PARAMETER = OpenApiParameter(
    "project_id_or_slug",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The ID or slug of the project the resource belongs to: digits only "
    "are the numeric ID, anything else the slug. Project slugs are unique within "
    "each organization.",
)


class StatsSchema(AutoSchema):
    """The path and query parameters shared by the stats endpoints."""

    def get_override_parameters(self) -> list[Any]:
        resolutions = [format_resolution(r) for r, _ in project_stats_settings.ROLLUPS]
        # Only those the operation's path has: the organization endpoint has no project.
        path = [
            p for p in (ORGANIZATION_PARAMETER, PROJECT_PARAMETER) if f"{{{p.name}}}" in self.path
        ]
        return [
            *path,
            OpenApiParameter(
                "stat",
                OpenApiTypes.STR,
                enum=sorted(STAT_CODES),
                default=DEFAULT_STAT,
                description="The name of the stat to query.",
            ),
            OpenApiParameter(
                "since",
                OpenApiTypes.DOUBLE,
                description="Start of the range: seconds since the UNIX epoch "
                "(ISO 8601 is accepted too). Default: `until` minus 86399 seconds.",
            ),
            OpenApiParameter(
                "until",
                OpenApiTypes.DOUBLE,
                description="End of the range: seconds since the UNIX epoch "
                "(ISO 8601 is accepted too). Default: now.",
            ),
            OpenApiParameter(
                "resolution",
                OpenApiTypes.STR,
                enum=resolutions,
                description="An explicit time-series resolution. Default: the finest "
                "that spans the range and still holds data for it.",
            ),
            OpenApiParameter(
                "environment",
                OpenApiTypes.STR,
                description="Only with `stat=generated`: that environment's counts. "
                "An environment never recorded in the organization answers 404.",
            ),
        ]

    def get_response_serializers(self) -> Any:  # a status -> response mapping
        return {
            200: OpenApiResponse(
                response=series_schema(),
                description="`[timestamp, count]` points, ascending and zero-filled.",
                examples=[
                    OpenApiExample(
                        "ProjectEventCounts",
                        value=[[1541455200, 1184], [1541458800, 1410], [1541462400, 1440]],
                    )
                ],
            ),
            400: _error("Bad query parameter"),
            401: _error("Missing or bad credentials"),
            403: _error("The token lacks a reading scope"),
            404: _error("Unknown organization or project, or not a member"),
            405: _error("Method not allowed"),
            429: _error("Throttled"),
            503: _error("The database is unavailable; retry after `Retry-After` seconds"),
        }


class OrganizationStatsSchema(StatsSchema):
    """Adds ``group`` and ``projectID``; a per-project object when grouped by project."""

    def get_override_parameters(self) -> list[Any]:
        return [
            *super().get_override_parameters(),
            OpenApiParameter(
                "group",
                OpenApiTypes.STR,
                enum=["organization", "project"],
                default="organization",
                description="`organization`: one series summed over the projects; "
                "`project`: an object of series keyed by project id; 400 when the "
                "projects times the points exceed the site's `MAX_TOTAL_POINTS`.",
            ),
            OpenApiParameter(
                "projectID",
                OpenApiTypes.INT,
                many=True,
                explode=True,
                description="Restrict to these projects (repeatable); ids of other "
                "organizations' projects match nothing.",
            ),
        ]

    def get_response_serializers(self) -> Any:
        responses = super().get_response_serializers()
        series = series_schema()
        responses[200] = OpenApiResponse(
            response={
                "oneOf": [
                    series,
                    {"type": "object", "additionalProperties": series},
                ]
            },
            description="`group=organization`: one series; `group=project`: "
            "`{project_id: series}` for every selected project.",
        )
        responses[404] = _error("Unknown organization, or not a member")
        return responses


organization_projects_schema = extend_schema_view(
    get=extend_schema(
        operation_id="listOrganizationProjects",
        summary="List an Organization's Projects",
        tags=["Organizations"],
        parameters=[ORGANIZATION_PARAMETER],
        responses={
            200: ProjectSerializer(many=True),
            400: _error("Bad filter or cursor"),
            401: _error("Missing or bad credentials"),
            403: _error("The token lacks a reading scope"),
            404: _error("Unknown organization, or not a member"),
            429: _error("Throttled"),
            503: _error("The database is unavailable; retry after `Retry-After` seconds"),
        },
    )
)

organization_stats_schema = extend_schema(
    operation_id="retrieveOrganizationStats",
    summary="Retrieve Event Counts for an Organization",
    description="The project endpoint's series for a whole organization, summed in the "
    "database, or one series per project with `group=project`.",
    tags=["Organizations"],
)


class OrganizationStatsV2Schema(AutoSchema):
    """Sentry's ``stats_v2`` parameters (repeated keys for lists) and answer."""

    def get_override_parameters(self) -> list[Any]:
        def many(
            name: str, enum: Any, description: str, required: bool = False
        ) -> OpenApiParameter:
            return OpenApiParameter(
                name,
                OpenApiTypes.STR,
                many=True,
                explode=True,
                enum=enum,
                required=required,
                description=description,
            )

        return [
            ORGANIZATION_PARAMETER,
            many(
                "field",
                list(FIELDS),
                "Repeatable. Both are the number of events.",
                required=True,
            ),
            many(
                "groupBy",
                list(GROUP_BY),
                "Repeatable. Groups are sorted by their values in this order; without "
                "`groupBy` the answer has one group. `project` keeps its series, bounded by "
                "the site's `MAX_TOTAL_POINTS` (projects x intervals; 400 past it). With the "
                "site's write buffer on, every grouping is bounded by it (projects x buckets "
                "read).",
            ),
            many(
                "category",
                list(CATEGORIES),
                "Repeatable. All counts are of `error` (`default` and `security` count as "
                "`error`). A `category` filter or `groupBy=category` is required.",
            ),
            many(
                "outcome",
                list(OUTCOMES),
                "Repeatable, case-insensitive. `accepted`, `filtered` and `rate_limited` "
                "hold counts here; the others are valid and empty.",
            ),
            many(
                "reason",
                None,
                "Repeatable. `none`, or a filter's id for `filtered` (e.g. `web-crawlers`).",
            ),
            OpenApiParameter(
                "project",
                OpenApiTypes.INT,
                many=True,
                explode=True,
                description="Repeatable project ids; none or `-1`: every project. An id "
                "that is not one of the organization's projects answers 403.",
            ),
            OpenApiParameter(
                "statsPeriod",
                OpenApiTypes.STR,
                description="The range ending now: `<number><unit>` with `s`, `m`, `h`, `d` "
                "or `w` (a bare number is seconds). Wins over `start` and `end`.",
            ),
            OpenApiParameter(
                "start",
                OpenApiTypes.STR,
                description="Start of the range: ISO 8601 (`Z`, an offset, or none for UTC) "
                "or epoch seconds; floored to the interval. With `end`.",
            ),
            OpenApiParameter(
                "end",
                OpenApiTypes.STR,
                description="End of the range, same forms as `start`; rounded up to the "
                "interval and exclusive. Without a range: the last 90 days.",
            ),
            OpenApiParameter(
                "interval",
                OpenApiTypes.STR,
                default="1h",
                description="`<number><unit>` with `m`, `h`, `d` or `w`; at most a day and "
                "dividing it; at most 1000 intervals. When no stored rollup serves it for "
                "the range, the answer is at the finest interval one does (see `intervals`).",
            ),
        ]

    def get_response_serializers(self) -> Any:
        counts = {"type": "object", "additionalProperties": {"type": "integer"}}
        return {
            200: OpenApiResponse(
                response={
                    "type": "object",
                    "properties": {
                        "start": {"type": "string"},
                        "end": {"type": "string"},
                        "intervals": {"type": "array", "items": {"type": "string"}},
                        "groups": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "by": {"type": "object", "additionalProperties": {}},
                                    "totals": counts,
                                    "series": {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": "array",
                                            "items": {"type": "integer"},
                                        },
                                    },
                                },
                                "required": ["by", "totals", "series"],
                            },
                        },
                    },
                    "required": ["start", "end", "intervals", "groups"],
                },
                description="Timestamps `YYYY-MM-DDTHH:MM:SSZ`; one series value per "
                "interval; groups holding only zeros left out.",
                examples=[
                    OpenApiExample(
                        "EventCountsByOutcome",
                        value={
                            "start": "2024-03-05T12:00:00Z",
                            "end": "2024-03-05T14:00:00Z",
                            "intervals": ["2024-03-05T12:00:00Z", "2024-03-05T13:00:00Z"],
                            "groups": [
                                {
                                    "by": {"outcome": "accepted"},
                                    "totals": {"sum(quantity)": 2310},
                                    "series": {"sum(quantity)": [1184, 1126]},
                                },
                                {
                                    "by": {"outcome": "filtered"},
                                    "totals": {"sum(quantity)": 31},
                                    "series": {"sum(quantity)": [17, 14]},
                                },
                            ],
                        },
                    )
                ],
            ),
            400: _error("Bad query parameter"),
            401: _error("Missing or bad credentials"),
            403: _error("The token lacks a reading scope, or a project is not the organization's"),
            404: _error("Unknown organization, or not a member"),
            405: _error("Method not allowed"),
            429: _error("Throttled"),
            503: _error("The database is unavailable; retry after `Retry-After` seconds"),
        }


organization_stats_v2_schema = extend_schema(
    operation_id="listOrganizationStatsV2",
    summary="Retrieve Event Counts for an Organization (v2)",
    description="Event counts by outcome, reason, category and project, as Sentry's "
    "`stats_v2`: select a field, a range and an interval, group or filter by columns.",
    tags=["Organizations"],
)


def _summary_example() -> dict[str, Any]:
    outcomes = dict.fromkeys(OUTCOMES, 0)
    outcomes.update(accepted=2310, filtered=31, rate_limited=14)
    return {
        "start": "2024-03-05T12:00:00Z",
        "end": "2024-03-05T14:00:00Z",
        "projects": [
            {
                "id": "1",
                "slug": "pump-station",
                "stats": [
                    {
                        "category": "error",
                        "outcomes": outcomes,
                        "totals": {"dropped": 45, SUMMARY_TOTAL: 2355},
                    }
                ],
            }
        ],
    }


class OrganizationStatsSummarySchema(AutoSchema):
    """Sentry's ``stats-summary`` parameters and its JSON and CSV answers."""

    def get_override_parameters(self) -> list[Any]:
        return [
            ORGANIZATION_PARAMETER,
            OpenApiParameter(
                "field",
                OpenApiTypes.STR,
                enum=list(FIELDS),
                required=True,
                description="Both are the number of events; the totals are keyed "
                "`sum(quantity)` either way.",
            ),
            OpenApiParameter(
                "statsPeriod",
                OpenApiTypes.STR,
                description="The range ending now: `<number><unit>` with `s`, `m`, `h`, `d` "
                "or `w` (a bare number is seconds). Wins over `start` and `end`.",
            ),
            OpenApiParameter(
                "start",
                OpenApiTypes.STR,
                description="Start of the range: ISO 8601 (`Z`, an offset, or none for UTC) "
                "or epoch seconds; floored to the interval. With `end`.",
            ),
            OpenApiParameter(
                "end",
                OpenApiTypes.STR,
                description="Inclusive end of the range, same forms as `start`: the interval "
                "holding it is counted (`stats_v2`'s `end` is exclusive). Without a range: "
                "the last 90 days.",
            ),
            OpenApiParameter(
                "interval",
                OpenApiTypes.STR,
                default="1h",
                description="`<number><unit>` with `h` or `d` (or `m`, `w`): at least an hour, "
                "at most a day and dividing it. Outcomes are derived per interval, then "
                "summed, as `stats_v2` derives them.",
            ),
            OpenApiParameter(
                "project",
                OpenApiTypes.INT,
                many=True,
                explode=True,
                description="Repeatable project ids; none or `-1`: every project. An id "
                "that is not one of the organization's projects answers 403. The projects "
                "times the intervals are bounded by the site's `MAX_TOTAL_POINTS` (400 past "
                "it).",
            ),
            OpenApiParameter(
                "category",
                OpenApiTypes.STR,
                enum=list(SUMMARY_CATEGORIES),
                description="All counts are of `error`: any other category answers an empty "
                "`stats` list for every project. Without it: `error`.",
            ),
            OpenApiParameter(
                "outcome",
                OpenApiTypes.STR,
                enum=list(OUTCOMES),
                description="Count only this outcome (case-insensitive; repeatable). Every "
                "outcome stays in the answer, the others at 0.",
            ),
            OpenApiParameter(
                "reason",
                OpenApiTypes.STR,
                description="Count only this reason (repeatable): `none`, or a filter's id "
                "for `filtered` (e.g. `web-crawlers`).",
            ),
            OpenApiParameter(
                "download",
                OpenApiTypes.BOOL,
                default=False,
                description="`true`: the answer as a CSV file (`stats_summary.csv`), one row "
                "a project: `project_id`, `project_slug`, then `<outcome>_errors` for each "
                "outcome, `dropped_errors` and `total_errors`.",
            ),
        ]

    def get_response_serializers(self) -> Any:
        counts = {"type": "object", "additionalProperties": {"type": "integer"}}
        project = {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "slug": {"type": "string"},
                "stats": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "category": {"type": "string"},
                            "outcomes": {
                                **counts,
                                "properties": {name: {"type": "integer"} for name in OUTCOMES},
                                "required": list(OUTCOMES),
                            },
                            "totals": {
                                **counts,
                                "properties": {
                                    "dropped": {"type": "integer"},
                                    SUMMARY_TOTAL: {"type": "integer"},
                                },
                                "required": ["dropped", SUMMARY_TOTAL],
                            },
                        },
                        "required": ["category", "outcomes", "totals"],
                    },
                },
            },
            "required": ["id", "slug", "stats"],
        }
        return {
            (200, "application/json"): OpenApiResponse(
                response={
                    "type": "object",
                    "properties": {
                        "start": {"type": "string"},
                        "end": {"type": "string"},
                        "projects": {"type": "array", "items": project},
                    },
                    "required": ["start", "end", "projects"],
                },
                description="Every project selected, by id, zeros included; `start` and `end` "
                "(`YYYY-MM-DDTHH:MM:SSZ`, `end` exclusive) are the range counted. `dropped` "
                "is every outcome but `accepted`; `sum(quantity)` all of them.",
                examples=[OpenApiExample("EventCountsByProject", value=_summary_example())],
            ),
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="With `download=true`: the same as CSV, as an attachment "
                "`stats_summary.csv`.",
            ),
            400: _error("Bad query parameter"),
            401: _error("Missing or bad credentials"),
            403: _error("The token lacks a reading scope, or a project is not the organization's"),
            404: _error("Unknown organization, or not a member"),
            405: _error("Method not allowed"),
            429: _error("Throttled"),
            503: _error("The database is unavailable; retry after `Retry-After` seconds"),
        }


organization_stats_summary_schema = extend_schema(
    operation_id="getOrganizationStatsSummary",
    summary="Retrieve an Organization's Events Count by Project",
    description="One total per project, category and outcome over a range, as Sentry's "
    "`stats-summary`; with `download=true` as a CSV file.",
    tags=["Organizations"],
)

project_stats_schema = extend_schema(
    operation_id="listProjectStats",
    summary="Retrieve Event Counts for a Project",
    description=(
        "Return a set of points representing a normalized timestamp and the number of "
        "events seen in the period. Query ranges are limited to the configured "
        "time-series resolutions."
    ),
    tags=["Projects"],
)


class RedocView(SpectacularRedocView):
    """drf-spectacular's ReDoc page with nothing fetched from the network.

    Its template links web fonts from a font CDN; ours is the same page
    without them. With ``SPECTACULAR_SETTINGS["REDOC_DIST"] = "SIDECAR"``
    (and ``drf_spectacular_sidecar`` installed) the script comes from the
    site too.
    """

    template_name = "project_stats/redoc.html"
