from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView


def version(name: str) -> list[object]:
    """The API and its schema under ``api/<name>/``, in the instance namespace ``name``."""
    api = [
        path("schema/", SpectacularAPIView.as_view(), name="schema"),
        path("", include("project_stats.urls")),
    ]
    return [path(f"api/{name}/", include((api, "api"), namespace=name))]


urlpatterns = [path("admin/", admin.site.urls), *version("0"), *version("1")]
