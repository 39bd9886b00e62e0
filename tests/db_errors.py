"""Database errors made by the real drivers, wrapped as Django wraps them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import psycopg
from django.db import Error
from django.db.utils import DatabaseErrorWrapper

# Driver connections as an error leaves them: still open, or lost under a statement.
OPEN = SimpleNamespace(closed=False, broken=False)
BROKEN = SimpleNamespace(closed=True, broken=True)


def as_django(cause: Exception, connection: object = None) -> Error:
    """``cause`` raised through Django's wrapper: its ``django.db`` class, ``__cause__`` set.

    ``connection`` is the driver connection the wrapper holds afterwards
    (None: none could be had).
    """
    driver = psycopg if type(cause).__module__.startswith("psycopg") else sqlite3
    wrapper = SimpleNamespace(Database=driver, errors_occurred=False, connection=connection)
    try:
        with DatabaseErrorWrapper(wrapper):
            raise cause
    except Error as error:
        return error
    raise AssertionError("not a database error")  # pragma: no cover


def refused_connection() -> psycopg.OperationalError:
    """What psycopg raises when nothing listens where the database should be."""
    try:
        psycopg.connect("host=127.0.0.1 port=1 dbname=none user=none connect_timeout=5")
    except psycopg.OperationalError as error:
        return error
    raise AssertionError("something listens on port 1")  # pragma: no cover


def lost_connection() -> Error:
    """A lost PostgreSQL connection as a request sees it (no server needed)."""
    return as_django(refused_connection())


def sqlite_locked(directory: Path) -> sqlite3.OperationalError:
    """SQLite's ``database is locked``: another connection holds the write lock."""
    path = directory / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, timeout=0)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        waiter.execute("CREATE TABLE t (x)")
    except sqlite3.OperationalError as error:
        return error
    finally:
        waiter.close()
        holder.close()
    raise AssertionError("the write went through")  # pragma: no cover
