"""The read path's hot statements, planned once per connection on PostgreSQL.

Django binds parameters on the client by default: the values are written into
the SQL text, so PostgreSQL parses and plans every statement afresh, and for
the access statement planning costs several times the execution. Django's
psycopg backend also turns psycopg's automatic preparation off (a connection
``prepare_threshold`` of None) unless the site's ``OPTIONS`` set it.

:func:`fetch_all` runs one of our statements with server-side binding as a
prepared statement: the first execution on a connection prepares it, later
ones only bind and execute (after five executions PostgreSQL may keep a
generic plan, which the statements are written to make a good one). Only the
statements run here are prepared: the site's other queries run as its
settings say, and the statement still goes through Django's cursor wrapper
(query logging, ``execute_wrapper``, error translation).

Preparation is off, and the statement runs on an ordinary cursor, on SQLite,
on psycopg2, when ``PROJECT_STATS["PREPARED_STATEMENTS"]`` is False (a pooler
that hands a connection to another client between transactions, such as
PgBouncer in transaction mode, loses prepared statements) and when the
database's ``OPTIONS`` set ``"prepare_threshold": None`` themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from .conf import project_stats_settings

__all__ = ["fetch_all", "preparing"]

# Where Django's debug cursor logs every query.
logger = logging.getLogger("django.db.backends")


def preparing(connection: BaseDatabaseWrapper) -> bool:
    """Whether :func:`fetch_all` prepares its statements on ``connection``."""
    if connection.vendor != "postgresql" or not project_stats_settings.PREPARED_STATEMENTS:
        return False
    options = connection.settings_dict.get("OPTIONS") or {}
    if "prepare_threshold" in options and options["prepare_threshold"] is None:
        return False  # the site turned preparation off itself
    # The backend's driver module: psycopg 3 prepares, psycopg2 cannot.
    return getattr(getattr(connection, "Database", None), "__name__", "") == "psycopg"


def _bigint(value: Any, int8: type[int]) -> Any:
    """``value`` with every int typed as bigint (psycopg's ``Int8``), in a list too."""
    if type(value) is int:
        return int8(value)
    if type(value) is list:
        return [int8(item) if type(item) is int else item for item in value]
    return value


def fetch_all(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Run ``sql`` with ``params`` on ``connection`` and return every row.

    ``sql`` must be the same text for every call of the same shape (values
    only in ``params``): each distinct text is prepared once per connection.
    """
    if not preparing(connection):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    import psycopg
    from psycopg.types.numeric import Int8

    # What ``connection.cursor()`` does, with a server-binding cursor.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    # One parameter type per position whatever the value (psycopg sends small
    # ints as int2, larger ones as int4 or int8, and the type is part of the
    # prepared statement's identity): an int as bigint, a list of ints (an
    # id list, see ``sqllists``) as bigint[].
    bound = [_bigint(value, Int8) for value in params]
    with connection.wrap_database_errors:
        cursor = connection.make_cursor(psycopg.Cursor(raw))  # type: ignore[arg-type]
    # A threshold of 0 prepares on the first execution. It is the
    # connection's setting, so it is restored at once: the site's own
    # queries keep the threshold the site chose.
    threshold = raw.prepare_threshold
    raw.prepare_threshold = 0
    start = time.monotonic()
    try:
        with cursor:
            cursor.execute(sql, bound)
            return list(cursor.fetchall())
    finally:
        raw.prepare_threshold = threshold
        if connection.queries_logged:
            # Django's debug cursor logs a prepared execution without its
            # text (psycopg keeps none): log the statement as Django would.
            duration = time.monotonic() - start
            text = connection.ops.compose_sql(sql, params)  # type: ignore[attr-defined]
            connection.queries_log.append({"sql": text, "time": f"{duration:.3f}"})
            logger.debug(
                "(%.3f) %s; args=%s; alias=%s",
                duration,
                text,
                params,
                connection.alias,
                extra={
                    "duration": duration,
                    "sql": text,
                    "params": params,
                    "alias": connection.alias,
                },
            )
