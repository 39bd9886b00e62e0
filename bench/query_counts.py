"""SQL statements per request, for the paths given as JSON (run by http_read.py).

Usage: query_counts.py TOKEN '{"name": "/path", ...}' with the site's settings
in the environment; prints ``{"name": count, ...}``.
"""

from __future__ import annotations

import json
import sys

import django


def main() -> None:
    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    token, paths = sys.argv[1], json.loads(sys.argv[2])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    for path in paths.values():  # first use of the token writes last_used
        client.get(path)
    counts = {}
    for name, path in paths.items():
        with CaptureQueriesContext(connection) as queries:
            status = client.get(path).status_code
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        counts[name] = len(queries.captured_queries)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
