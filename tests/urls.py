from django.contrib import admin
from django.urls import path

from .access_views import ProjectAccessView

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "api/0/test-access/projects/<organization_slug>/<project_slug>/",
        ProjectAccessView.as_view(),
        name="test-access-project",
    ),
]
