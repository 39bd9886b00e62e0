"""HTTP endpoints: validate the query, ask ``tsdb``, shape the answer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import (
    APIException,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    Throttled,
)
from rest_framework.generics import ListAPIView
from rest_framework.metadata import SimpleMetadata
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import access, summary, tsdb, usage
from .authentication import BearerTokenAuthentication
from .conf import project_stats_settings
from .constants import DEFAULT_STAT, ENVIRONMENT_STATS, ORG_READ_SCOPES, PROJECT_READ_SCOPES
from .exceptions import exception_handler
from .filters import FilterBackend, ProjectFilter, ProjectIdFilter, filter_or_400
from .models import Project, ProjectRedirect
from .pagination import CursorLinkPagination
from .permissions import NOT_FOUND_MESSAGE, HasScope, get_project_or_404
from .schema import (
    OrganizationStatsSchema,
    OrganizationStatsSummarySchema,
    OrganizationStatsV2Schema,
    StatsSchema,
    organization_projects_schema,
    organization_stats_schema,
    organization_stats_summary_schema,
    organization_stats_v2_schema,
    project_stats_schema,
)
from .serializers import (
    InvalidQuery,
    OrganizationStatsQuerySerializer,
    ParsedQuery,
    ProjectSerializer,
    QueryParser,
    StatsQuerySerializer,
    check_total_points,
    render_series,
)
from .throttling import ProjectStatsThrottle


class StatsEndpoint(APIView):
    """Shared behaviour of the stats endpoints.

    Unknown methods answer 405 before authentication; ``OPTIONS`` answers
    without credentials, as a CORS preflight must.

    The read path is one database round trip: authentication only reads the
    bearer header (no query), then :meth:`look_up` runs the access statement
    (:func:`project_stats.access.look_up`): the token with its user's flags,
    the object of the path if that user may see it, the environment check
    and the counts, from which the view answers 401, 404, 403, 400 in that
    order. Session requests (the browsable API) authenticate as usual and
    run the same statement with their user. URL keyword arguments besides
    the path's ids or slugs (e.g. DRF's ``version``) are accepted and kept.
    """

    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ProjectStatsThrottle]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]
    # OPTIONS answers whatever the site's DEFAULT_METADATA_CLASS (None: 405).
    # DRF instantiates it; the stubs type the attribute as an instance.
    metadata_class = SimpleMetadata  # type: ignore[assignment]
    required_scopes = PROJECT_READ_SCOPES
    # Whether the path names a project (else an organization).
    path_has_project = False

    found: access.Found | None = None
    # The bearer token's digest, once read from the header.
    digest: str | None = None
    now: datetime
    # The access statement's keyword arguments (``read``: the planned counts).
    statement: dict[str, Any]
    parameters: ParsedQuery

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        method = (request.method or "").lower()
        if method not in self.http_method_names or not hasattr(self, method):
            raise MethodNotAllowed(request.method or "")
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request: Request) -> None:
        if request.method != "OPTIONS":
            self.found = self.look_up(request)

    def check_permissions(self, request: Request) -> None:
        if request.method != "OPTIONS":
            super().check_permissions(request)

    def check_throttles(self, request: Request) -> None:
        try:
            super().check_throttles(request)
        except Throttled as refusal:
            if self.digest is not None:
                # The next requests with this token skip reading counts.
                ProjectStatsThrottle.remember_refusal(self.digest, getattr(refusal, "wait", 0) or 1)
            raise

    def _refused_before_reading(self, request: Request, digest: str | None) -> bool:
        """Whether the request throttle will refuse this request: then no counts are read."""
        throttles = [t for t in self.get_throttles() if isinstance(t, ProjectStatsThrottle)]
        if not throttles:
            return False
        if digest is not None:
            return ProjectStatsThrottle.token_refused(digest)
        return any(throttle.refuses(request) for throttle in throttles)

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return exception_handler  # 503 JSON when the database is unreachable

    def prepare(self, request: Request) -> dict[str, Any]:
        """Parse the query (no database); keyword arguments for the access statement."""
        return {}

    def look_up(self, request: Request) -> access.Found:
        """Authenticate and read everything the request decides on, in one statement."""
        self.now = timezone.now()
        self.statement = statement = self.prepare(request)
        organization = access.id_or_slug(self.kwargs.get("organization_id_or_slug"))
        project = None
        if self.path_has_project:
            project = access.id_or_slug(self.kwargs.get("project_id_or_slug"))
            if project is None:
                organization = None  # no row can match this path
        bearer = next(
            (a for a in request.authenticators or () if isinstance(a, BearerTokenAuthentication)),
            None,
        )
        try:
            pending = bearer.identify(request) if bearer is not None else None
            if bearer is not None and pending is not None:
                digest = self.digest = pending.digest
                if digest is not None and self._refused_before_reading(request, digest):
                    statement = _without_counts(statement)
                found = (
                    access.look_up(
                        organization=organization,
                        project=project,
                        digest=digest,
                        now=self.now,
                        **statement,
                    )
                    if digest is not None
                    else access.Found()
                )
                user, auth = bearer.accept(pending, found.token, now=self.now)
                request.user, request.auth = user, auth  # type: ignore[assignment]
                request._authenticator = bearer  # type: ignore[attr-defined]
                return found
        except APIException:
            # As DRF does: the error page (the browsable API's too) sees an
            # anonymous request, not a second authentication attempt.
            request._not_authenticated()  # type: ignore[attr-defined]
            raise
        session_user = request.user  # the other classes (a session), as DRF would
        if organization is None or not (session_user.is_authenticated and session_user.is_active):
            return access.Found()
        if self._refused_before_reading(request, None):
            statement = _without_counts(statement)
        return access.look_up(
            organization=organization, project=project, user=session_user, now=self.now, **statement
        )


class ProjectStatsView(StatsEndpoint):
    """Event counts of one project as ``[timestamp, count]`` points.

    Query parameters: ``stat`` (default ``received``), ``since``, ``until``
    (epoch seconds or ISO 8601; default the last 24 hours), ``resolution``
    (``10s``, ``1h``, ``1d``; default chosen from the range) and, for
    ``stat=generated``, ``environment``. The organization and the project
    are each given by id (digits only) or slug.
    """

    schema = StatsSchema()
    path_has_project = True

    def prepare(self, request: Request) -> dict[str, Any]:
        parser = QueryParser.of(StatsQuerySerializer)
        self.parameters = parser.parse(request.query_params, now=self.now)
        return _read_arguments(self.parameters, self.now)

    @project_stats_schema
    def get(
        self,
        request: Request,
        organization_id_or_slug: str,
        project_id_or_slug: str,
        **kwargs: Any,
    ) -> Response:
        found = self.found or access.Found()
        target = found.target
        if target is None:
            return self._redirect_renamed(request, organization_id_or_slug, project_id_or_slug)
        self.check_object_permissions(request, target)
        query = self.parameters.query(
            environment_exists=_environment_check(found, target.organization_id)
        )
        if found.counts is not None:  # read in the statement, as planned from this query
            return Response(render_series(self.statement["read"].series(found.counts)))
        points = tsdb.get_range(
            target.pk,
            query["stat"],
            query["start"],
            query["end"],
            rollup=query["rollup"],
            environment=query["environment"],
            now=self.now,
        )
        return Response(render_series(points))

    def _redirect_renamed(
        self, request: Request, organization_id_or_slug: str, project_id_or_slug: str
    ) -> Response:
        """302 to a renamed project's current path, after the same access checks."""
        organization = access.id_or_slug(organization_id_or_slug)
        old_slug = access.id_or_slug(project_id_or_slug)
        if organization is None or not isinstance(old_slug, str):
            raise NotFound(NOT_FOUND_MESSAGE)  # ids never change: nothing to follow
        target: Project | None = ProjectRedirect.objects.target(organization, old_slug)
        if target is None:
            raise NotFound(NOT_FOUND_MESSAGE)
        project = get_project_or_404(request.user, organization_id_or_slug, target.slug)
        self.check_object_permissions(request, project)
        match = request.resolver_match
        view_name = match.view_name if match is not None else "project_stats:project-stats"
        location = reverse(
            view_name,
            kwargs={
                **self.kwargs,
                "organization_id_or_slug": organization_id_or_slug,
                "project_id_or_slug": project.slug,
            },
        )
        if request.META.get("QUERY_STRING"):
            location += "?" + request.META["QUERY_STRING"]
        return Response(status=302, headers={"Location": location})


def _without_counts(statement: dict[str, Any]) -> dict[str, Any]:
    """The access statement's arguments without the counts and the environment check.

    Should the request be allowed after all, the view reads them through
    ``tsdb`` instead, as when a buffer keeps part of them.
    """
    return {k: v for k, v in statement.items() if k not in ("read", "environment")}


def _read_arguments(query: ParsedQuery, now: datetime) -> dict[str, Any]:
    """The access statement's ``read`` and ``environment`` for a parsed query."""
    arguments: dict[str, Any] = {}
    stat = query.initial_data.get("stat", DEFAULT_STAT)
    environment = query.initial_data.get("environment")
    in_statement = tsdb.reads_in_one_statement()
    if in_statement and stat in ENVIRONMENT_STATS and isinstance(environment, str):
        arguments["environment"] = environment
    if in_statement and query.is_valid():
        data = query.validated_data
        # ValueError: e.g. an environment no row can hold, answered by the query's checks.
        with contextlib.suppress(ValueError):
            arguments["read"] = tsdb.plan_range(
                data["stat"],
                data["start"],
                data["end"],
                rollup=data["rollup"],
                environment=data["environment"],
                now=now,
            )
    return arguments


def _environment_check(found: access.Found, organization_id: int) -> Callable[[str], bool]:
    def exists(environment: str) -> bool:
        if found.environment_exists is not None:
            return found.environment_exists
        return tsdb.environment_exists(organization_id, environment)

    return exists


class OrganizationEndpointMixin:
    """Looks up the organization of the URL with the caller's membership, then scopes."""

    required_scopes = ORG_READ_SCOPES

    def get_organization(self, request: Request) -> access.Target:
        found: access.Found | None = getattr(self, "found", None)
        if found is None or found.target is None:
            raise NotFound(NOT_FOUND_MESSAGE)
        self.check_object_permissions(request, found.target)  # type: ignore[attr-defined]
        return found.target


@organization_projects_schema
class OrganizationProjectsView(OrganizationEndpointMixin, StatsEndpoint, ListAPIView):  # type: ignore[type-arg]
    """The organization's projects, paginated with Sentry's cursors and ``Link`` header.

    Filters: ``query`` (substring of slug or name), ``slug`` (exact, repeatable).
    """

    serializer_class = ProjectSerializer
    pagination_class = CursorLinkPagination
    filter_backends = [FilterBackend]
    filterset_class = ProjectFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Project.objects.none()
        organization = self.get_organization(self.request)
        # Ordered by slug for stable pages.
        return (
            Project.objects.filter(organization_id=organization.pk)
            .order_by("slug", "pk")
            .select_related("organization")
        )


class OrganizationStatsView(OrganizationEndpointMixin, StatsEndpoint):
    """The organization's counts: one summed series, or one per project.

    The project endpoint's parameters, plus ``group`` (``organization`` or
    ``project``) and ``projectID`` (repeatable) to restrict the projects.
    """

    schema = OrganizationStatsSchema()

    def prepare(self, request: Request) -> dict[str, Any]:
        parser = QueryParser.of(OrganizationStatsQuerySerializer)
        self.parameters = parser.parse(request.query_params, now=self.now)
        self.projects = ProjectIdFilter(request.query_params, queryset=Project.objects.all())
        arguments = _read_arguments(self.parameters, self.now)
        if not self.projects.is_valid():
            arguments.pop("read", None)  # a 400 once access is settled: no counts needed
            return arguments
        arguments["project_ids"] = self.projects.form.cleaned_data.get("projectID") or None
        group = self.parameters.validated_data.get("group") if "read" in arguments else None
        arguments["summed"] = group == "organization"
        arguments["list_projects"] = group == "project"
        if group == "project" and arguments["read"].buckets:
            # The statement reads counts only for as many projects as fit in
            # MAX_TOTAL_POINTS; get() then refuses an answer that would not.
            limit = project_stats_settings.MAX_TOTAL_POINTS
            arguments["max_projects"] = limit // len(arguments["read"].buckets)
        return arguments

    @organization_stats_schema
    def get(self, request: Request, organization_id_or_slug: str, **kwargs: Any) -> Response:
        organization = self.get_organization(request)
        found = self.found or access.Found()
        query = self.parameters.query(environment_exists=_environment_check(found, organization.pk))
        projects = filter_or_400(self.projects).filter(organization_id=organization.pk)
        read = {
            "stat": query["stat"],
            "start": query["start"],
            "end": query["end"],
            "rollup": query["rollup"],
            "environment": query["environment"],
            "now": self.now,
        }
        in_statement = found.counts is not None
        if query["group"] == "organization":
            if in_statement:
                series = self.statement["read"].series(found.counts or [])
            else:
                try:
                    series = tsdb.get_range_total(projects, **read)
                except tsdb.QueryError as error:
                    # With the write buffer, every project's series is read.
                    raise InvalidQuery(
                        f"With the write buffer on, {error} (MAX_TOTAL_POINTS). Select fewer "
                        "projects with projectID, narrow since/until or choose a coarser "
                        "resolution."
                    ) from error
            return Response(render_series(series))
        # The answer's size is known once the projects are: refuse before reading counts.
        if in_statement:
            check_total_points(query, len(found.project_ids))
            by_project = self.statement["read"].series_by_project(
                found.counts or [], sorted(found.project_ids)
            )
        else:
            ids = list(projects.order_by("pk").values_list("pk", flat=True))
            check_total_points(query, len(ids))
            by_project = tsdb.get_range_by_project(ids, **read)
        return Response({str(pk): render_series(points) for pk, points in by_project.items()})


class OrganizationStatsV2View(OrganizationEndpointMixin, StatsEndpoint):
    """Sentry's ``stats_v2``: event counts by outcome, reason, category and project.

    Parameters and answer as :mod:`project_stats.usage` describes them. Answers
    401, 404 (as the organization stats endpoint), then 400 for a bad
    parameter, 403 for a ``project`` that is not one of the organization's,
    400 when ``groupBy=project`` would exceed ``MAX_TOTAL_POINTS``, and with
    the write buffer on when the projects times the buckets read would,
    whatever the grouping. Without a buffer the access check, the project ids
    and the counts come from one statement; the counts are read only when the
    answer will be given.
    """

    schema = OrganizationStatsV2Schema()

    query: usage.UsageQuery | None
    error: str | None

    def prepare(self, request: Request) -> dict[str, Any]:
        params = {name: request.query_params.getlist(name) for name in request.query_params}
        self.query, self.error = None, None
        try:
            self.query = query = usage.parse(params, now=self.now, rollups=tsdb.get_rollups())
        except usage.UsageError as error:
            self.error = error.message
            return {}
        arguments: dict[str, Any] = {"project_ids": query.project_ids, "list_projects": True}
        if query.project_ids is not None:
            arguments["require_projects"] = len(query.project_ids)
            if self._too_many_points(len(query.project_ids)):
                return arguments  # a 400 once access is settled: no counts needed
        if tsdb.reads_in_one_statement():
            arguments["read"] = self._plan(query)
            if "project" in query.group_by:
                limit = project_stats_settings.MAX_TOTAL_POINTS
                arguments["max_projects"] = limit // len(query.intervals)
        return arguments

    @staticmethod
    def _plan(query: usage.UsageQuery) -> tsdb.StatsRangeQuery:
        return tsdb.plan_stats_range(
            usage.READ_STATS, query.first_bucket, query.last_bucket, rollup=query.rollup
        )

    def _too_many_points(self, projects: int) -> bool:
        query = self.query
        if query is None or "project" not in query.group_by:
            return False
        return projects * len(query.intervals) > project_stats_settings.MAX_TOTAL_POINTS

    @organization_stats_v2_schema
    def get(self, request: Request, organization_id_or_slug: str, **kwargs: Any) -> Response:
        self.get_organization(request)  # 404 before any 400
        query = self.query
        if query is None:
            raise InvalidQuery(self.error or "Invalid query")
        found = self.found or access.Found()
        selected = sorted(set(found.project_ids))
        requested = query.project_ids
        # The answer's size is a parameter's 400: reported before the project check.
        count = len(requested) if requested is not None else len(selected)
        if self._too_many_points(count):
            intervals, limit = len(query.intervals), project_stats_settings.MAX_TOTAL_POINTS
            raise InvalidQuery(
                f"groupBy=project would return {count} series of {intervals} intervals, "
                f"{count * intervals} points in all; the limit is {limit} (MAX_TOTAL_POINTS). "
                "Select fewer projects with project, narrow the range or choose a larger "
                "interval."
            )
        if requested is not None and len(selected) != len(requested):
            raise PermissionDenied()
        if found.counts is not None:
            cells = tsdb.StatsRangeQuery.cells(found.counts)
        else:
            planned = self._plan(query)
            try:
                cells = tsdb.get_stats_by_project(selected, planned)
            except tsdb.QueryError as error:
                # With the write buffer, every project's series is read.
                raise InvalidQuery(
                    f"With the write buffer on, {error} (MAX_TOTAL_POINTS). Select fewer "
                    "projects with project, narrow the range or choose a larger interval."
                ) from error
        return Response(usage.answer(query, cells))


class OrganizationStatsSummaryView(OrganizationEndpointMixin, StatsEndpoint):
    """Sentry's ``stats-summary``: one total per project, category and outcome.

    Parameters and answer as :mod:`project_stats.summary` describes them;
    with ``download=true`` the same as a CSV attachment (``stats_summary.csv``).
    Answers 401, 404 (as ``stats_v2``), then 400 for a bad parameter, 400
    when the projects summed times the intervals exceed ``MAX_TOTAL_POINTS``
    (each project's series is derived interval by interval before it is
    summed; this also bounds the answer, one entry a project), 403 for a
    ``project`` that is not one of the organization's. Without a buffer the
    access check, the projects with their slugs and the counts come from one
    statement; with it, the counts are read as ``stats_v2`` reads them.
    """

    schema = OrganizationStatsSummarySchema()

    query: usage.UsageQuery | None
    download: bool
    error: str | None

    def prepare(self, request: Request) -> dict[str, Any]:
        params = {name: request.query_params.getlist(name) for name in request.query_params}
        self.query, self.download, self.error = None, False, None
        try:
            self.query, self.download = summary.parse(
                params, now=self.now, rollups=tsdb.get_rollups()
            )
        except usage.UsageError as error:
            self.error = error.message
            return {}
        query = self.query
        arguments: dict[str, Any] = {
            "project_ids": query.project_ids,
            "list_projects": True,
            "project_slugs": True,
        }
        if query.project_ids is not None:
            arguments["require_projects"] = len(query.project_ids)
            if self._too_many_points(len(query.project_ids)):
                return arguments  # a 400 once access is settled: no counts needed
        if tsdb.reads_in_one_statement() and query.counts_errors:
            arguments["read"] = OrganizationStatsV2View._plan(query)
            arguments["max_projects"] = project_stats_settings.MAX_TOTAL_POINTS // len(
                query.intervals
            )
        return arguments

    def _too_many_points(self, projects: int) -> bool:
        query = self.query
        if query is None:
            return False
        return projects * len(query.intervals) > project_stats_settings.MAX_TOTAL_POINTS

    @organization_stats_summary_schema
    def get(
        self, request: Request, organization_id_or_slug: str, **kwargs: Any
    ) -> Response | HttpResponse:
        self.get_organization(request)  # 404 before any 400
        query = self.query
        if query is None:
            raise InvalidQuery(self.error or "Invalid query")
        found = self.found or access.Found()
        selected = sorted(set(found.project_ids))
        requested = query.project_ids
        count = len(requested) if requested is not None else len(selected)
        if self._too_many_points(count):
            intervals, limit = len(query.intervals), project_stats_settings.MAX_TOTAL_POINTS
            raise InvalidQuery(
                f"The summary would sum {count} series of {intervals} intervals, "
                f"{count * intervals} points in all; the limit is {limit} (MAX_TOTAL_POINTS). "
                "Select fewer projects with project, narrow the range or choose a larger "
                "interval."
            )
        if requested is not None and len(selected) != len(requested):
            raise PermissionDenied()
        cells: dict[tuple[int, int, int], int] = {}
        if not query.counts_errors:
            pass  # no category asked for holds counts
        elif found.counts is not None:
            cells = tsdb.StatsRangeQuery.cells(found.counts)
        else:
            try:
                cells = tsdb.get_stats_by_project(selected, OrganizationStatsV2View._plan(query))
            except tsdb.QueryError as error:
                raise InvalidQuery(
                    f"With the write buffer on, {error} (MAX_TOTAL_POINTS). Select fewer "
                    "projects with project, narrow the range or choose a larger interval."
                ) from error
        projects = [(pk, found.project_slugs[pk]) for pk in selected]
        body = summary.answer(query, cells, projects)
        if not self.download:
            return Response(body)
        response = HttpResponse(
            summary.to_csv(body, summary.csv_categories(query)),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{summary.CSV_FILENAME}"'
        return response
