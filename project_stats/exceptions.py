"""How the API answers errors that are not the client's fault.

:func:`exception_handler` translates one kind of error: a service the
request needs cannot be reached right now. That is :func:`is_unavailable`
(a PostgreSQL connection refused or lost) or ``BufferUnavailable`` (the Redis
write buffer of ``PROJECT_STATS["BUFFER"]`` cannot be reached and reads may
not bypass it). Both answer 503 with a JSON ``detail`` and ``Retry-After``,
so clients back off and retry; Django closes a broken database connection
when the request ends (it marks errors on the connection wrapper), so the
next request connects afresh.

Everything else goes to the site's ``REST_FRAMEWORK["EXCEPTION_HANDLER"]``
(DRF's own by default), so API errors keep the site's format, and what no
handler answers (a missing table, a statement timeout, a statement the driver
refuses, a bug) is a real 500 through Django's error reporting:
``got_request_exception``, the traceback in the ``django.request`` log, the
mail to ``ADMINS``.

The stats views use it through ``get_exception_handler``; a site that wants
the 503 for its own DRF views too can set
``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "project_stats.exceptions.exception_handler"``,
or call :func:`exception_handler` from its own handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, cast

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import OperationalError
from django.db.utils import DatabaseErrorWrapper
from rest_framework import status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from .tsdb.buffer import BufferUnavailable

__all__ = [
    "BUFFER_UNAVAILABLE",
    "DATABASE_UNAVAILABLE",
    "RETRY_AFTER_SECONDS",
    "exception_handler",
    "is_unavailable",
]

DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."
BUFFER_UNAVAILABLE = "The counts buffer is unavailable; try again shortly."
# Long enough for a failover or a restart to finish, short enough for dashboards.
RETRY_AFTER_SECONDS = 5

# PostgreSQL error codes of a server that refuses or drops the connection:
# class 08 (connection exception) is matched by its prefix; then
# admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown,
# cannot_connect_now (starting up, recovering), idle_session_timeout and
# too_many_connections.
_CONNECTION_CLASS = "08"
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "53300"})

logger = logging.getLogger(__name__)

_Handler = Callable[[Exception, dict[str, Any]], Response | None]

# Set while the site's handler runs, so a site handler that calls ours in
# turn gets DRF's instead of itself again.
_in_site_handler: ContextVar[bool] = ContextVar("project_stats_in_site_handler", default=False)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached: answer 503, not 500.

    True for a Django ``OperationalError`` raised from a psycopg (or
    psycopg2) error that carries the SQLSTATE of a server refusing or
    dropping connections, or that carries none and left no connection: the
    attempt to connect failed (the error keeps its bad connection), or the
    Django connection that raised it has none open (none could be had, or
    it was lost under the statement: closed or broken). False for
    everything else, a lost connection being the one failure a retry fixes
    without anyone acting: the driver refusing a statement we built wrongly
    (e.g. more than 65,535 parameters: an error without SQLSTATE, as a lost
    connection's, but on a connection still open), a missing table, a
    statement or lock timeout, a deadlock, a serialization failure, other
    database errors and SQLite's errors (an in-process library has no
    connection to lose; its ``database is locked`` is an overloaded or
    stuck writer, which the site must hear about).
    """
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if cause is None or not type(cause).__module__.startswith("psycopg"):
        return False
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate is not None:
        return str(sqlstate).startswith(_CONNECTION_CLASS) or sqlstate in _CONNECTION_SQLSTATES
    return _failed_to_connect(cause) or _connection_gone(exc)


def _failed_to_connect(cause: BaseException) -> bool:
    """Whether psycopg raised ``cause`` connecting: it keeps the failed, bad connection."""
    pgconn = getattr(cause, "pgconn", None)
    if pgconn is None:
        return False
    try:
        from psycopg import pq
    except ImportError:  # pragma: no cover - psycopg2 keeps no pgconn
        return False
    return bool(pgconn.status == pq.ConnStatus.BAD)


def _connection_gone(exc: BaseException) -> bool:
    """Whether the Django connection that raised ``exc`` has no open connection left.

    Django translates a driver's error in ``DatabaseErrorWrapper.__exit__``,
    whose frame in the traceback holds the connection wrapper: its driver
    connection is None when none could be had (refused, a pool's timeout),
    closed or broken when it was lost under the statement (psycopg 2:
    ``closed`` is non-zero). A statement the driver refused leaves it open.
    """
    wrapper = None
    frames = exc.__traceback__
    while frames is not None:
        owner = frames.tb_frame.f_locals.get("self")
        if isinstance(owner, DatabaseErrorWrapper):
            wrapper = getattr(owner, "wrapper", None)  # the innermost translation wins
        frames = frames.tb_next
    if wrapper is None:
        return False
    raw = getattr(wrapper, "connection", None)
    return raw is None or bool(getattr(raw, "closed", False) or getattr(raw, "broken", False))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """503 for :func:`is_unavailable`, a JSON 400 for a request past Django's
    upload limits; anything else to the site's handler."""
    if isinstance(exc, TooManyFieldsSent | RequestDataTooBig):
        # Django answers these with an HTML page; an API client gets JSON.
        # Django's security log still hears of it, as it would.
        logging.getLogger(f"django.security.{type(exc).__name__}").error(str(exc))
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if is_unavailable(exc):
        # The class name is enough to diagnose; the message may quote a DSN.
        logger.warning("Database unavailable (%s); answering 503.", type(exc.__cause__).__name__)
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
    return _site_exception_handler(exc, context)


def _site_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # DRF imports the dotted path on first use (and again when settings change).
    site_handler = cast(_Handler, api_settings.EXCEPTION_HANDLER)
    if site_handler is exception_handler or _in_site_handler.get():
        return drf_exception_handler(exc, context)
    reset = _in_site_handler.set(True)
    try:
        response = site_handler(exc, context)
    finally:
        _in_site_handler.reset(reset)
    return response
