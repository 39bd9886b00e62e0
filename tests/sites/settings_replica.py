"""A router sending reads to a ``replica`` database and writes to ``default``.

Two real, separate databases (not a test mirror), so a test can tell which
one a statement reached by what it finds there. On PostgreSQL the replica
is the default database's name plus ``_replica``; on SQLite its own
in-memory database.
"""

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES = {
    "default": DATABASES["default"],
    "replica": {
        **DATABASES["default"],
        "NAME": (
            DATABASES["default"]["NAME"]
            if DATABASES["default"]["NAME"] == ":memory:"
            else f"{DATABASES['default']['NAME']}_replica"
        ),
    },
}
DATABASE_ROUTERS = ["tests.sites.routers.ReplicaRouter"]
