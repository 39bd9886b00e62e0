"""A host site's own DRF building blocks, set as its REST_FRAMEWORK defaults."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler


class SitePagination(PageNumberPagination):
    """Envelopes every page: ``{"total": ..., "items": [...]}``."""

    def get_paginated_response(self, data: Any) -> Response:
        assert self.page is not None
        return Response({"total": self.page.paginator.count, "items": data})


def site_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Reshapes every error: ``{"error": {"status": ..., "message": ...}}``."""
    response = exception_handler(exc, context)
    if response is not None:
        response.data = {"error": {"status": response.status_code, "message": str(exc)}}
    return response
