from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/0/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/0/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"
    ),
    path("api/0/", include("project_stats.urls")),
]
