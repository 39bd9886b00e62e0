"""Admin pages for inspecting organizations, projects, members and counts."""

from __future__ import annotations

from django.contrib import admin

from .models import EventCount, Organization, OrganizationMember, Project


class OrganizationMemberInline(admin.TabularInline):
    model = OrganizationMember
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "date_added"]
    search_fields = ["slug", "name"]
    inlines = [OrganizationMemberInline]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "organization", "date_added"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["slug", "name", "organization__slug"]


@admin.register(OrganizationMember)
class OrganizationMemberAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "date_added"]
    list_filter = ["role"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__username", "organization__slug"]
    autocomplete_fields = ["user", "organization"]


@admin.register(EventCount)
class EventCountAdmin(admin.ModelAdmin):
    list_display = ["project", "stat", "environment", "rollup", "timestamp", "count"]
    list_filter = ["rollup", "stat"]
    list_select_related = ["project__organization"]
    search_fields = ["project__slug", "project__organization__slug"]
    date_hierarchy = "timestamp"
    show_full_result_count = False

    # Counts change through tsdb, never by hand.
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
