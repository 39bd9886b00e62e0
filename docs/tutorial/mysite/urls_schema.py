# Appended to mysite/urls.py: the schema and Swagger UI.
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns += [
    path("api/0/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/0/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema")),
]
