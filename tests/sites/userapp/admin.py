"""Three admin sites, as host sites set them up.

- ``admin.site``: project_stats registers itself there; the user model is not registered.
- ``plain_site``: the site's own ``AdminSite`` registering project_stats' admin
  classes and the user model without ``search_fields``.
- ``searching_site``: the same with ``search_fields`` on the user admin.
"""

from __future__ import annotations

from django.contrib import admin

from project_stats import admin as stats_admin
from project_stats.models import ApiToken, EventCount, Organization, OrganizationMember, Project

from .models import EmailUser


class SiteAdmin(admin.AdminSite):
    site_header = "A host site's admin"


def register_project_stats(site: admin.AdminSite) -> None:
    site.register(Organization, stats_admin.OrganizationAdmin)
    site.register(Project, stats_admin.ProjectAdmin)
    site.register(OrganizationMember, stats_admin.OrganizationMemberAdmin)
    site.register(EventCount, stats_admin.EventCountAdmin)
    site.register(ApiToken, stats_admin.ApiTokenAdmin)


class UserAdminWithoutSearch(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["email", "is_staff"]


class UserAdminWithSearch(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["email", "is_staff"]
    search_fields = ["email"]


plain_site = SiteAdmin(name="plain_admin")
register_project_stats(plain_site)
plain_site.register(EmailUser, UserAdminWithoutSearch)

searching_site = SiteAdmin(name="searching_admin")
register_project_stats(searching_site)
searching_site.register(EmailUser, UserAdminWithSearch)
