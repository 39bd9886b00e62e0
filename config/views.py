"""The demo site's root page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

from project_stats import demo
from project_stats.models import Project

# Where the schema and its UI may be mounted, most useful first.
SCHEMA_UI_PATHS = ("/api/0/schema/swagger/", "/api/0/schema/swagger-ui/", "/api/0/schema/redoc/")
SCHEMA_PATH = "/api/0/schema/"


def _first_resolving(paths: tuple[str, ...]) -> str | None:
    for candidate in paths:
        try:
            resolve(candidate)
        except Resolver404:
            continue
        return candidate
    return None


def index(request: HttpRequest) -> HttpResponse:
    """What this site is and where to go; links only to what is mounted."""
    try:
        example = reverse(
            "project_stats:project-stats",
            kwargs={
                "organization_slug": demo.ORGANIZATION_SLUG,
                "project_slug": demo.PROJECTS[0].slug,
            },
        )
    except NoReverseMatch:
        example = None
    project = Project.objects.filter(
        organization__slug=demo.ORGANIZATION_SLUG, slug=demo.PROJECTS[0].slug
    ).first()
    context = {
        "project_admin_url": (
            reverse("admin:project_stats_project_change", args=[project.pk]) if project else None
        ),
        "example_path": example,
        "example_url": request.build_absolute_uri(example) if example else None,
        "schema_ui_path": _first_resolving(SCHEMA_UI_PATHS),
        "schema_path": _first_resolving((SCHEMA_PATH,)),
        "organization_slug": demo.ORGANIZATION_SLUG,
        "project_slug": demo.PROJECTS[0].slug,
    }
    return render(request, "index.html", context)
