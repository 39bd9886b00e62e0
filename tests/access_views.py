"""A minimal endpoint built exactly as the API views use the access layer."""

from __future__ import annotations

from rest_framework.authentication import (
    BasicAuthentication,
    RemoteUserAuthentication,
    SessionAuthentication,
)
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project_stats.authentication import BearerTokenAuthentication
from project_stats.constants import PROJECT_READ_SCOPES
from project_stats.permissions import HasScope, get_project_or_404
from project_stats.throttling import ProjectStatsThrottle


class ProjectAccessView(APIView):
    authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ProjectStatsThrottle]
    required_scopes = PROJECT_READ_SCOPES
    schema = None  # a test fixture, not part of the API description

    def get(
        self, request: Request, organization_id_or_slug: str, project_id_or_slug: str
    ) -> Response:
        project = get_project_or_404(request.user, organization_id_or_slug, project_id_or_slug)
        self.check_object_permissions(request, project)
        return Response({"project": project.slug})


class OtherAuthenticationAccessView(ProjectAccessView):
    """The same endpoint for HTTP Basic and ``REMOTE_USER`` callers, as a site might add."""

    authentication_classes = [BasicAuthentication, RemoteUserAuthentication]
