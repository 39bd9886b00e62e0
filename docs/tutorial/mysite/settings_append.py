# Appended to mysite/settings.py (django-admin startproject's own file).
INSTALLED_APPS += [
    "rest_framework",
    "django_filters",
    "project_stats",
]

# The time series' resolutions (these are the defaults): 10-second buckets
# kept an hour, hourly ones kept 7 days, daily ones kept 90 days.
PROJECT_STATS = {
    "ROLLUPS": ((10, 360), (3600, 168), (86400, 90)),
}
