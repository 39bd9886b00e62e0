"""The site's URLs plus the floor (the same 24-point JSON, no auth, no database) and the
straightforward DRF reference implementation of the stats endpoint."""

from __future__ import annotations

import json
import time

from django.http import HttpRequest, HttpResponse
from django.urls import path

from bench.reference import ReferenceProjectStatsView
from config.urls import urlpatterns as site_urlpatterns


def floor(request: HttpRequest) -> HttpResponse:
    now = int(time.time())
    hour = now - now % 3600
    points = [[hour - 3600 * i, 0] for i in reversed(range(24))]
    return HttpResponse(json.dumps(points, separators=(",", ":")), content_type="application/json")


urlpatterns = [
    path("bench/floor/", floor),
    path(
        "bench/reference/projects/<str:organization_slug>/<str:project_slug>/stats/",
        ReferenceProjectStatsView.as_view(),
    ),
    *site_urlpatterns,
]
