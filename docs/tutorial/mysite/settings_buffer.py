# Appended to mysite/settings.py: the Redis write buffer
# (pip install '/path/to/django-project-stats[redis]', from a checkout).
import os

PROJECT_STATS["BUFFER"] = {
    "URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "PREFIX": "mysite",  # every key starts with it, so sites can share a Redis
}
