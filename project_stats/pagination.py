"""Offset pagination with Sentry's cursors and ``Link`` header.

A cursor is ``value:offset:is_prev`` (value is always 0 here); the ``Link``
header carries ``rel="previous"`` and ``rel="next"`` entries, each with
``results="true|false"`` and its ``cursor``, so Sentry clients can page on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from .serializers import InvalidQuery

# Offsets of at most 18 digits: below 2**63, so LIMIT/OFFSET never overflow.
_CURSOR_RE = re.compile(r"(\d{1,18}):(\d{1,18}):([01])")
# Longer per_page text is refused before int() reads it (leading zeros allowed).
_MAX_PER_PAGE_DIGITS = 10


class CursorLinkPagination(BasePagination):
    default_per_page = 100
    max_per_page = 100

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: APIView | None = None
    ) -> list[Any]:
        self.request = request
        self.per_page = self._per_page(request.query_params.get("per_page"))
        self.offset = self._offset(request.query_params.get("cursor"))
        rows = list(queryset[self.offset : self.offset + self.per_page + 1])
        self.has_next = len(rows) > self.per_page
        return rows[: self.per_page]

    def _per_page(self, value: str | None) -> int:
        if not value:
            return self.default_per_page
        if (
            not (value.isascii() and value.isdigit())
            or len(value) > _MAX_PER_PAGE_DIGITS
            or not 1 <= int(value) <= self.max_per_page
        ):
            raise InvalidQuery(f"per_page must be an integer from 1 to {self.max_per_page}")
        return int(value)

    def _offset(self, value: str | None) -> int:
        if not value:
            return 0
        match = _CURSOR_RE.fullmatch(value)
        if match is None:
            raise InvalidQuery("Invalid cursor parameter.")
        return int(match.group(2))

    def _link(self, offset: int, rel: str, results: bool, is_prev: int) -> str:
        cursor = f"0:{offset}:{is_prev}"
        url = replace_query_param(self.request.build_absolute_uri(), "cursor", cursor)
        return f'<{url}>; rel="{rel}"; results="{str(results).lower()}"; cursor="{cursor}"'

    def get_paginated_response(self, data: Sequence[Any]) -> Response:
        previous = self._link(max(self.offset - self.per_page, 0), "previous", self.offset > 0, 1)
        following = self._link(self.offset + self.per_page, "next", self.has_next, 0)
        return Response(data, headers={"Link": f"{previous}, {following}"})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return schema

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        return [
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "A cursor from the previous page's `Link` header.",
                "schema": {"type": "string"},
            },
            {
                "name": "per_page",
                "in": "query",
                "required": False,
                "description": f"Results per page, 1 to {self.max_per_page}.",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_per_page},
            },
        ]
