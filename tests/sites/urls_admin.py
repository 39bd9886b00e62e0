from django.contrib import admin
from django.urls import include, path

from .userapp.admin import plain_site, searching_site

urlpatterns = [
    path("admin/", admin.site.urls),
    path("plain-admin/", plain_site.urls),
    path("searching-admin/", searching_site.urls),
    path("api/0/", include("project_stats.urls")),
]
