"""HTTP endpoints: validate the query, ask ``tsdb``, shape the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import reverse
from django.utils import timezone
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import MethodNotAllowed, NotFound
from rest_framework.generics import ListAPIView
from rest_framework.metadata import SimpleMetadata
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import tsdb
from .authentication import BearerTokenAuthentication
from .constants import ORG_READ_SCOPES, PROJECT_READ_SCOPES
from .exceptions import exception_handler
from .filters import FilterBackend, ProjectFilter, ProjectIdFilter, filter_or_400
from .models import Organization, Project, ProjectRedirect
from .pagination import CursorLinkPagination
from .permissions import HasScope, get_organization_or_404, get_project_or_404
from .schema import (
    OrganizationStatsSchema,
    StatsSchema,
    organization_projects_schema,
    organization_stats_schema,
    project_stats_schema,
)
from .serializers import (
    OrganizationStatsQuerySerializer,
    ProjectSerializer,
    StatsQuerySerializer,
    check_total_points,
    render_series,
)
from .throttling import ProjectStatsThrottle


class StatsEndpoint(APIView):
    """Shared behaviour of the stats endpoints.

    Unknown methods answer 405 before authentication; ``OPTIONS`` answers
    without credentials, as a CORS preflight must.
    """

    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ProjectStatsThrottle]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]
    # OPTIONS answers whatever the site's DEFAULT_METADATA_CLASS (None: 405).
    # DRF instantiates it; the stubs type the attribute as an instance.
    metadata_class = SimpleMetadata  # type: ignore[assignment]
    required_scopes = PROJECT_READ_SCOPES

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        method = (request.method or "").lower()
        if method not in self.http_method_names or not hasattr(self, method):
            raise MethodNotAllowed(request.method or "")
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request: Request) -> None:
        if request.method != "OPTIONS":
            super().perform_authentication(request)

    def check_permissions(self, request: Request) -> None:
        if request.method != "OPTIONS":
            super().check_permissions(request)

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return exception_handler  # 503 JSON when the database is unreachable


class ProjectStatsView(StatsEndpoint):
    """Event counts of one project as ``[timestamp, count]`` points.

    Query parameters: ``stat`` (default ``received``), ``since``, ``until``
    (epoch seconds or ISO 8601; default the last 24 hours), ``resolution``
    (``10s``, ``1h``, ``1d``; default chosen from the range) and, for
    ``stat=generated``, ``environment``.
    """

    schema = StatsSchema()

    @project_stats_schema
    def get(
        self,
        request: Request,
        organization_id_or_slug: str,
        project_id_or_slug: str,
        **site_kwargs: Any,
    ) -> Response:
        # ``site_kwargs``: what the including URL pattern captures (e.g. DRF's ``version``).
        try:
            project = get_project_or_404(request.user, organization_id_or_slug, project_id_or_slug)
        except NotFound:
            return self._redirect_renamed(request, organization_id_or_slug, project_id_or_slug)
        self.check_object_permissions(request, project)
        now = timezone.now()
        query = StatsQuerySerializer(data=request.query_params, context={"now": now}).query(
            environment_exists=lambda env: tsdb.environment_exists(project.organization_id, env)
        )
        points = tsdb.get_range(
            project,
            query["stat"],
            query["start"],
            query["end"],
            rollup=query["rollup"],
            environment=query["environment"],
            now=now,
        )
        return Response(render_series(points))

    def _redirect_renamed(
        self, request: Request, organization_id_or_slug: str, project_id_or_slug: str
    ) -> Response:
        """302 to a renamed project's current path, after the same access checks."""
        target: Project | None = ProjectRedirect.objects.target(
            organization_id_or_slug, project_id_or_slug
        )
        if target is None:
            raise NotFound("The requested resource does not exist")
        project = get_project_or_404(request.user, organization_id_or_slug, target.slug)
        self.check_object_permissions(request, project)
        match = request.resolver_match
        view_name = match.view_name if match is not None else "project_stats:project-stats"
        # The including site's URL arguments (e.g. DRF's ``version``) are kept.
        site_kwargs = match.kwargs if match is not None else {}
        location = reverse(
            view_name,
            kwargs={
                **site_kwargs,
                "organization_id_or_slug": organization_id_or_slug,
                "project_id_or_slug": project.slug,
            },
        )
        if request.META.get("QUERY_STRING"):
            location += "?" + request.META["QUERY_STRING"]
        return Response(status=302, headers={"Location": location})


class OrganizationEndpointMixin:
    """Looks up the organization of the URL with the caller's membership, then scopes."""

    required_scopes = ORG_READ_SCOPES

    def get_organization(self, request: Request, organization_id_or_slug: str) -> Organization:
        organization = get_organization_or_404(request.user, organization_id_or_slug)
        self.check_object_permissions(request, organization)  # type: ignore[attr-defined]
        return organization


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
        organization = self.get_organization(self.request, self.kwargs["organization_id_or_slug"])
        # Ordered by slug for stable pages; the organization is already loaded.
        return (
            Project.objects.filter(organization=organization)
            .order_by("slug", "pk")
            .select_related("organization")
        )


class OrganizationStatsView(OrganizationEndpointMixin, StatsEndpoint):
    """The organization's counts: one summed series, or one per project.

    The project endpoint's parameters, plus ``group`` (``organization`` or
    ``project``) and ``projectID`` (repeatable) to restrict the projects.
    """

    schema = OrganizationStatsSchema()

    @organization_stats_schema
    def get(self, request: Request, organization_id_or_slug: str, **site_kwargs: Any) -> Response:
        organization = self.get_organization(request, organization_id_or_slug)
        now = timezone.now()
        query = OrganizationStatsQuerySerializer(
            data=request.query_params, context={"now": now}
        ).query(environment_exists=lambda env: tsdb.environment_exists(organization.pk, env))
        projects = filter_or_400(
            ProjectIdFilter(
                request.query_params,
                queryset=Project.objects.filter(organization=organization).order_by("pk"),
            )
        )
        read = {
            "stat": query["stat"],
            "start": query["start"],
            "end": query["end"],
            "rollup": query["rollup"],
            "environment": query["environment"],
            "now": now,
        }
        if query["group"] == "organization":
            return Response(render_series(tsdb.get_range_total(projects, **read)))
        # The answer's size is known once the projects are: refuse before reading counts.
        ids = list(projects.values_list("pk", flat=True))
        check_total_points(query, len(ids))
        series = tsdb.get_range_by_project(ids, **read)
        return Response({str(pk): render_series(points) for pk, points in series.items()})
