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

psycopg keeps the names of the statements it prepared on a connection, and
the server may drop them or refuse them behind its back: ``DISCARD ALL`` or
``DEALLOCATE ALL`` (a pool's reset, the site's own code), a migration that
changes the type of a column a statement returns ("cached plan must not
change result type"), or an execution that fails after the statement was
prepared (psycopg forgets it, the server keeps it). After any failure of our
statement the connection is put back in step: every statement prepared on
it is deallocated and psycopg forgets them all (then, or before the next of
our statements when the failure aborted a transaction). Out of a
transaction, a statement that failed because it was gone or stale runs once
more, prepared anew. Inside one the failure stands: the transaction is
aborted, and retrying would need a savepoint around every statement: two
more round trips on every call, for a failure that comes once per connection
(``bench/prepared_faults.py`` measures them). A Django pool whose connections come
back without their statements (its ``reset`` discards them) gains nothing
from preparation: once that is seen, nothing more is prepared on its
connections.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

from django.db import Error
from django.db.backends.base.base import BaseDatabaseWrapper

from .conf import project_stats_settings

__all__ = ["fetch_all", "preparing"]

# Where Django's debug cursor logs every query.
logger = logging.getLogger("django.db.backends")

# SQLSTATEs of a statement gone from the session (26000,
# invalid_sql_statement_name) or refused after a schema change (0A000,
# feature_not_supported: "cached plan must not change result type").
_GONE = "26000"
_RETRIED = frozenset({_GONE, "0A000"})

# psycopg connections where a statement of ours failed: psycopg's record of
# the prepared statements may not match the session's until they are resynced.
_out_of_step: weakref.WeakSet[Any] = weakref.WeakSet()

# Django pools (``DatabaseWrapper.pool``) whose connections came back without
# their prepared statements: nothing is prepared on them any more.
_discarding_pools: weakref.WeakSet[Any] = weakref.WeakSet()


def preparing(connection: BaseDatabaseWrapper) -> bool:
    """Whether :func:`fetch_all` prepares its statements on ``connection``."""
    if connection.vendor != "postgresql" or not project_stats_settings.PREPARED_STATEMENTS:
        return False
    options = connection.settings_dict.get("OPTIONS") or {}
    if "prepare_threshold" in options and options["prepare_threshold"] is None:
        return False  # the site turned preparation off itself
    if options.get("pool") and getattr(connection, "pool", None) in _discarding_pools:
        return False
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
        return _fetch_unprepared(connection, sql, params)
    from psycopg.types.numeric import Int8

    # What ``connection.cursor()`` does, with a server-binding cursor.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    if _statement_cache(raw) is None:
        return _fetch_unprepared(connection, sql, params)
    # One parameter type per position whatever the value (psycopg sends small
    # ints as int2, larger ones as int4 or int8, and the type is part of the
    # prepared statement's identity): an int as bigint, a list of ints (an
    # id list, see ``sqllists``) as bigint[].
    bound = [_bigint(value, Int8) for value in params]
    start = time.monotonic()
    try:
        if raw in _out_of_step and _outside_failed_transaction(raw):
            _resync(connection, raw)
        try:
            return _execute(connection, raw, sql, bound)
        except Error as error:
            if not _recover(connection, raw, error):
                raise
        # Gone or stale, now deallocated: once more, prepared anew (unless
        # the connection's pool was just found to discard statements).
        try:
            return _execute(connection, raw, sql, bound, prepare=preparing(connection))
        except Error as error:
            _recover(connection, raw, error)
            raise
    finally:
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


def _fetch_unprepared(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _execute(
    connection: BaseDatabaseWrapper, raw: Any, sql: str, bound: list[Any], prepare: bool = True
) -> list[tuple[Any, ...]]:
    """One execution of ``sql``, prepared (on its first run on ``raw``) if ``prepare``."""
    import psycopg

    with connection.wrap_database_errors:
        cursor = connection.make_cursor(psycopg.Cursor(raw))  # type: ignore[arg-type]
    # A threshold of 0 prepares on the first execution. It is the
    # connection's setting, so it is restored at once: the site's own
    # queries keep the threshold the site chose.
    threshold = raw.prepare_threshold
    if prepare:
        raw.prepare_threshold = 0
    try:
        with cursor:
            cursor.execute(sql, bound)
            return list(cursor.fetchall())
    finally:
        raw.prepare_threshold = threshold


def _statement_cache(raw: Any) -> Any:
    """psycopg's record of the statements it prepared on ``raw``, or None.

    psycopg has no public way to make a connection forget them. Its
    ``Connection._prepared`` (a ``PrepareManager``, the same from psycopg 3.1
    to 3.3) is what it clears itself when a transaction rolls back:
    ``clear()`` forgets every statement and has the connection's next command
    deallocate them. Without it a statement dropped behind psycopg's back
    would fail on every later call, so nothing is prepared then.
    """
    cache = getattr(raw, "_prepared", None)
    return cache if callable(getattr(cache, "clear", None)) else None


def _outside_failed_transaction(raw: Any) -> bool:
    from psycopg.pq import TransactionStatus

    return raw.info.transaction_status in (TransactionStatus.IDLE, TransactionStatus.INTRANS)


def _resync(connection: BaseDatabaseWrapper, raw: Any) -> None:
    """Deallocate every statement prepared on ``raw``; psycopg forgets its own."""
    with connection.wrap_database_errors:
        # psycopg first: the deallocation it schedules runs after our command
        # below. In the other order it would run after our next statement was
        # prepared, and take it away.
        _statement_cache(raw).clear()
        with raw.cursor() as cursor:
            # Those psycopg never knew of too: a statement whose first
            # execution failed stays prepared on the server, forgotten.
            cursor.execute("DEALLOCATE ALL", prepare=False)
    _out_of_step.discard(raw)


def _recover(connection: BaseDatabaseWrapper, raw: Any, error: Error) -> bool:
    """Bring ``raw`` back in step after our statement failed with ``error``;
    whether to run the statement again."""
    from psycopg.pq import TransactionStatus

    sqlstate = getattr(error.__cause__, "sqlstate", None)
    if sqlstate == _GONE:
        _note_discarded(connection)
    _out_of_step.add(raw)
    if raw.info.transaction_status != TransactionStatus.IDLE:
        # In a transaction, now aborted: resynced before our next statement
        # on this connection (the transaction's rollback, if it is psycopg's,
        # deallocates what psycopg knew of, not the rest).
        return False
    try:
        _resync(connection, raw)
    except Error:
        return False  # the connection is lost: ``error`` says what happened
    return sqlstate in _RETRIED


def _note_discarded(connection: BaseDatabaseWrapper) -> None:
    """A statement of ours vanished: on a pooled connection, the pool's reset
    discards them (``DISCARD ALL``, ``DEALLOCATE ALL``), so every checkout
    would prepare again and fail once first."""
    if not (connection.settings_dict.get("OPTIONS") or {}).get("pool"):
        return
    pool = getattr(connection, "pool", None)
    if pool is None or pool in _discarding_pools:
        return
    _discarding_pools.add(pool)
    logging.getLogger(__name__).warning(
        "The pool of database %r discards prepared statements when it resets a "
        "connection: project_stats stops preparing statements on it. Set "
        "PROJECT_STATS['PREPARED_STATEMENTS'] = False, or give the pool a reset that "
        "keeps them.",
        connection.alias,
    )
