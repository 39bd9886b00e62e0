"""Admin pages for inspecting organizations, projects, members and counts.

A project's change page draws a chart of its counts, read through
``tsdb.get_range`` like the API; ``?stat=`` and ``?resolution=`` pick the
series and fall back to the defaults when they are not valid.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from . import tsdb
from .charts import BarChart, bar_chart
from .conf import project_stats_settings
from .constants import DEFAULT_STAT, STAT_CODES
from .models import EventCount, Organization, OrganizationMember, Project
from .tsdb.rollups import epoch_to_datetime, format_resolution, parse_resolution

HOUR = 3600
DAY = 86400
DEFAULT_CHART_ROLLUP = HOUR
# Enough bars to read at the admin's width; more would be slivers.
MAX_CHART_BARS = 720


def chart_points(rollup: int, samples: int) -> int:
    """How many buckets the chart shows at ``rollup``.

    A day's worth up to hourly buckets (10s: the hour kept, 1h: 24 hours),
    the whole retention above (1d: 90 days); never more than is kept, than
    ``MAX_POINTS`` allows, or than fit as bars.
    """
    wanted = DAY // rollup if rollup <= HOUR else samples
    limit = project_stats_settings.MAX_POINTS
    return max(1, min(wanted, samples, limit, MAX_CHART_BARS))


def _chosen_rollup(value: str | None, rollups: dict[int, int]) -> int:
    default = DEFAULT_CHART_ROLLUP if DEFAULT_CHART_ROLLUP in rollups else next(iter(rollups))
    try:
        rollup = parse_resolution(value) if value else default
    except ValueError:
        return default
    return rollup if rollup in rollups else default


def chart_context(
    request: HttpRequest, project: Project, *, now: datetime | None = None
) -> dict[str, Any]:
    """What the change form's chart template needs, from the request's GET parameters."""
    rollups = dict(tsdb.get_rollups())
    stat = request.GET.get("stat")
    if stat not in STAT_CODES:
        stat = DEFAULT_STAT
    rollup = _chosen_rollup(request.GET.get("resolution"), rollups)
    points = chart_points(rollup, rollups[rollup])
    end = now or timezone.now()
    # Sentry's window arithmetic: N points need a span of (N - 1) rollups.
    start = end - timedelta(seconds=rollup * (points - 1))
    chart: BarChart | None = None
    first_bucket: datetime | None = None
    error = ""
    try:
        series = tsdb.get_range(project, stat, start, end, rollup=rollup)
    except tsdb.QueryError as exc:
        error = str(exc)
    else:
        chart = bar_chart(series, rollup)
        if series:
            first_bucket = epoch_to_datetime(series[0][0])
    return {
        "chart": chart,
        "error": error,
        "stat": stat,
        "stats": list(STAT_CODES),
        "resolution": format_resolution(rollup),
        "resolutions": [format_resolution(r) for r in rollups],
        "first_bucket": first_bucket,
        "end": end,
        "changelist_filters": request.GET.get("_changelist_filters", ""),
    }


class OrganizationMemberInline(admin.TabularInline):
    model = OrganizationMember
    extra = 0
    autocomplete_fields = ["user"]


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ["slug", "name"]
    show_change_link = True


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "date_added"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [OrganizationMemberInline, ProjectInline]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "organization", "date_added"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["slug", "name", "organization__slug"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["organization"]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Project | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.pk is not None:
            context["stats_chart"] = chart_context(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)


@admin.register(OrganizationMember)
class OrganizationMemberAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "date_added"]
    list_filter = ["role"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__username", "organization__slug"]
    autocomplete_fields = ["user", "organization"]


class RollupFilter(admin.SimpleListFilter):
    """The configured rollups, named as the API names resolutions (no DISTINCT scan)."""

    title = "rollup"
    parameter_name = "rollup"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(r), format_resolution(r)) for r, _ in tsdb.get_rollups()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        # Only offered values filter; anything else shows everything rather than failing.
        if value in {str(r) for r, _ in tsdb.get_rollups()}:
            return queryset.filter(rollup=int(value))
        return queryset


@admin.register(EventCount)
class EventCountAdmin(admin.ModelAdmin):
    list_display = ["project", "stat", "environment", "resolution", "timestamp", "count"]
    list_filter = [RollupFilter, "stat"]
    list_select_related = ["project__organization"]
    search_fields = ["project__slug", "project__organization__slug"]
    date_hierarchy = "timestamp"
    show_full_result_count = False

    @admin.display(description="rollup", ordering="rollup")
    def resolution(self, obj: EventCount) -> str:
        return format_resolution(obj.rollup)

    # Counts change through tsdb, never by hand.
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
