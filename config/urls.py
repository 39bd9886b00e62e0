"""URLs of the demo site: the root page, the admin, the API and its schema."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project_stats.schema import RedocView

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    # Log in and out links of the browsable API.
    path("api-auth/", include("rest_framework.urls")),
    path("api/0/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/0/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"
    ),
    path("api/0/schema/redoc/", RedocView.as_view(url_name="schema"), name="redoc"),
    path("api/0/", include("project_stats.urls")),
]
