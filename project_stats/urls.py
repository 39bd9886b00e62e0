from django.urls import path

from . import views

app_name = "project_stats"

urlpatterns = [
    path(
        "projects/<str:organization_id_or_slug>/<str:project_id_or_slug>/stats/",
        views.ProjectStatsView.as_view(),
        name="project-stats",
    ),
    path(
        "organizations/<str:organization_id_or_slug>/projects/",
        views.OrganizationProjectsView.as_view(),
        name="organization-projects",
    ),
    path(
        "organizations/<str:organization_id_or_slug>/stats/",
        views.OrganizationStatsView.as_view(),
        name="organization-stats",
    ),
    path(
        "organizations/<str:organization_id_or_slug>/stats_v2/",
        views.OrganizationStatsV2View.as_view(),
        name="organization-stats-v2",
    ),
    path(
        "organizations/<str:organization_id_or_slug>/stats-summary/",
        views.OrganizationStatsSummaryView.as_view(),
        name="organization-stats-summary",
    ),
]
