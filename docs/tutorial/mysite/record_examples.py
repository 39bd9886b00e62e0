# Run with: python manage.py shell < record_examples.py
from project_stats.models import Project

project = Project.objects.get(organization__slug="acme", slug="backend")
# --- example
from datetime import timedelta

from django.utils import timezone

from project_stats import tsdb

now = timezone.now()
tsdb.incr(project, "received")  # one event, now
tsdb.incr(project, "generated", environment="production", count=5)
tsdb.incr(project, "received", count=2, timestamp=now - timedelta(hours=3))
tsdb.incr_many([tsdb.Increment(project, "rejected", now - timedelta(minutes=5), 3)])

start, end = now - timedelta(hours=24), now
points = tsdb.get_range(project, "received", start, end)  # hourly: [(epoch, count), ...]
print(len(points), "points,", sum(count for _, count in points), "received")
# --- end
