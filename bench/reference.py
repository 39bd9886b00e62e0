"""A straightforward DRF implementation of the project stats endpoint, as a yardstick.

What a Django developer would write first: a token lookup with
``select_related("user")``, the project with the membership through the ORM,
the counts through a queryset, a serializer for the points. The same
answers as the real endpoint for the benchmark's requests (default stat,
no environment); served by ``bench/urls.py`` next to it, never shipped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.shortcuts import get_object_or_404
from django.utils import timezone
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project_stats import tokens
from project_stats.constants import PROJECT_READ_SCOPES, stat_code
from project_stats.models import ApiToken, EventCount, Project

ROLLUPS = (10, 3600, 86400)


class ReferenceTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "").split()
        if len(header) != 2 or header[0].lower() != "bearer":
            return None
        try:
            token = ApiToken.objects.select_related("user").get(digest=tokens.digest(header[1]))
        except ApiToken.DoesNotExist:
            raise AuthenticationFailed("Invalid token.") from None
        if token.is_revoked or token.is_expired() or not token.user.is_active:
            raise AuthenticationFailed("Invalid token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class QuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    stat = serializers.CharField(default="received")
    since = serializers.FloatField(required=False)
    until = serializers.FloatField(required=False)
    resolution = serializers.ChoiceField(choices=["10s", "1h", "1d"], required=False)


class PointSerializer(serializers.Serializer):  # type: ignore[type-arg]
    timestamp = serializers.IntegerField()
    count = serializers.IntegerField()

    def to_representation(self, instance: Any) -> list[int]:
        data = super().to_representation(instance)
        return [data["timestamp"], data["count"]]


class ReferenceProjectStatsView(APIView):
    authentication_classes = [ReferenceTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request, organization_slug: str, project_slug: str) -> Response:
        project = get_object_or_404(
            Project.objects.select_related("organization"),
            organization__slug=organization_slug,
            slug=project_slug,
            organization__members__user=request.user,
        )
        if not PROJECT_READ_SCOPES.intersection(request.auth.scopes):  # type: ignore[union-attr]
            raise PermissionDenied()
        query = QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        now = timezone.now().timestamp()
        end = query.validated_data.get("until", now)
        start = query.validated_data.get("since", end - 86399)
        resolution = query.validated_data.get("resolution")
        rollup = {"10s": 10, "1h": 3600, "1d": 86400}[resolution] if resolution else 3600
        last = int(end) - int(end) % rollup
        buckets = [last - rollup * i for i in range(int((end - start) // rollup) + 1)][::-1]
        epoch = datetime.fromtimestamp(0, tz=UTC)
        rows = EventCount.objects.filter(
            project=project,
            stat=stat_code(query.validated_data["stat"]),
            rollup=rollup,
            environment="",
            timestamp__gte=epoch + timedelta(seconds=buckets[0]),
            timestamp__lte=epoch + timedelta(seconds=buckets[-1]),
        ).values_list("timestamp", "count")
        stored = {int(ts.timestamp()): count for ts, count in rows}
        points = [{"timestamp": b, "count": stored.get(b, 0)} for b in buckets]
        return Response(PointSerializer(points, many=True).data)
