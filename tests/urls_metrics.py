"""The test site with the buffer's metrics view routed, as docs/howto/monitoring.md shows."""

from django.urls import path

from project_stats.metrics import BufferMetricsView

from .urls import urlpatterns as site_urlpatterns

urlpatterns = [
    path("metrics/buffer", BufferMetricsView.as_view(), name="buffer-metrics"),
    *site_urlpatterns,
]
