"""How the API answers errors that are not the client's fault.

DRF's own handler covers ``APIException``s and leaves everything else to
Django, which answers a lost database connection with its HTML 500 page.
:func:`exception_handler` adds one case: the database is unreachable or the
connection was cut (``OperationalError``, ``InterfaceError``), or the Redis
write buffer cannot be reached (``BufferUnavailable``), answered as 503 with
a JSON ``detail`` and ``Retry-After``, so clients back off and
retry. Django closes the broken connection when the request ends (it marks
errors on the connection wrapper), so the next request connects afresh.

The stats views use it through ``get_exception_handler``; a site that wants
it for its own DRF views too can set
``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "project_stats.exceptions.exception_handler"``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from .tsdb.buffer import BufferUnavailable

__all__ = ["BUFFER_UNAVAILABLE", "DATABASE_UNAVAILABLE", "RETRY_AFTER_SECONDS", "exception_handler"]

DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."
BUFFER_UNAVAILABLE = "The counts buffer is unavailable; try again shortly."
# Long enough for a failover or a restart to finish, short enough for dashboards.
RETRY_AFTER_SECONDS = 5

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus 503 for a database that cannot be reached."""
    if isinstance(exc, OperationalError | InterfaceError):
        # The class name is enough to diagnose; the message may quote a DSN.
        logger.warning("Database unavailable (%s); answering 503.", type(exc).__name__)
        set_rollback()
        return Response(
            {"detail": DATABASE_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, BufferUnavailable):
        # Redis (PROJECT_STATS["BUFFER"]) is down and reads may not bypass it.
        logger.error("Write buffer unavailable; answering 503.", exc_info=exc)
        return Response(
            {"detail": BUFFER_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return drf_exception_handler(exc, context)
