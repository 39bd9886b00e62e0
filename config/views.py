"""The demo site's root page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from project_stats import demo
from project_stats.models import Project


def index(request: HttpRequest) -> HttpResponse:
    """What this site is and where to go."""
    example = reverse(
        "project_stats:project-stats",
        kwargs={
            "organization_id_or_slug": demo.ORGANIZATION_SLUG,
            "project_id_or_slug": demo.PROJECTS[0].slug,
        },
    )
    project = Project.objects.filter(
        organization__slug=demo.ORGANIZATION_SLUG, slug=demo.PROJECTS[0].slug
    ).first()
    context = {
        "project_admin_url": (
            reverse("admin:project_stats_project_change", args=[project.pk]) if project else None
        ),
        "example_path": example,
        "example_url": request.build_absolute_uri(example),
        "schema_ui_path": reverse("swagger"),
        "schema_path": reverse("schema"),
        "organization_slug": demo.ORGANIZATION_SLUG,
        "project_slug": demo.PROJECTS[0].slug,
    }
    return render(request, "index.html", context)
