# mysite/urls.py, in full.
from django.contrib import admin
from django.urls import include, path

from mysite import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("signup/", views.signup),
    path("api/0/", include("project_stats.urls")),
]
