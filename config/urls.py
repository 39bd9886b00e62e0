"""URLs of the demo site: the root page, the admin, the API and its schema."""

from __future__ import annotations

from importlib.util import find_spec

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    # Log in and out links of the browsable API.
    path("api-auth/", include("rest_framework.urls")),
]

# The API lives in its own module; mount it once it exists.
if find_spec("project_stats.urls") is not None:
    urlpatterns.append(path("api/0/", include("project_stats.urls")))
