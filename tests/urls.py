from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project_stats.schema import RedocView

from .access_views import OtherAuthenticationAccessView, ProjectAccessView

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "api/0/test-access/projects/<organization_id_or_slug>/<project_id_or_slug>/",
        ProjectAccessView.as_view(),
        name="test-access-project",
    ),
    path(
        "api/0/test-access-other/projects/<organization_id_or_slug>/<project_id_or_slug>/",
        OtherAuthenticationAccessView.as_view(),
        name="test-access-other-authentication",
    ),
    path("api/0/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/0/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"
    ),
    path("api/0/schema/redoc/", RedocView.as_view(url_name="schema"), name="redoc"),
    path("api/0/", include("project_stats.urls")),
]
