"""What our SQL says differently on each database: one small class per vendor.

The store (``database.py``) and the read path (``access.py``) are written once;
they ask :func:`dialect` for the few fragments that differ: the additive
upsert, a bucket start as epoch seconds, a bigint cast, the overflow error.
Chosen by ``connection.vendor``, as Django picks ``backends/<vendor>/operations.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from django.db import DataError, IntegrityError, OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper

from .rollups import epoch_to_datetime

Row = tuple[int, int, str, int, int, int]
"""``(project_id, stat_code, environment, rollup, bucket_epoch, count)``."""

OVERFLOW_MESSAGE = "bigint out of range: a count would pass 2**63 - 1"

# Shared by all backfills: PostgreSQL's pg_advisory_xact_lock key, MariaDB's GET_LOCK name.
BACKFILL_LOCK = 0x70735F62
BACKFILL_LOCK_NAME = "project_stats.backfill"
BACKFILL_LOCK_TIMEOUT = 600  # seconds; a chunk is one statement


class Dialect:
    """The fragments every vendor provides; see the subclasses."""

    vendor: ClassVar[str]
    # Rows a multi-row VALUES upsert writes per statement.
    rows_per_statement: ClassVar[int] = 1000

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection

    def epoch(self, column: str) -> str:
        """SQL turning a stored bucket start into epoch seconds (an integer)."""
        raise NotImplementedError

    def bigint(self, expression: str) -> str:
        """``expression`` cast to a 64-bit integer."""
        return f"CAST({expression} AS bigint)"

    def sum_bigint(self, expression: str) -> str:
        """``SUM(expression)`` as a 64-bit integer; a sum out of its range fails the statement."""
        return self.bigint(f"SUM({expression})")

    def bucket(self, column: str, rollup: int) -> str:
        """The start of the ``rollup`` bucket holding timestamp ``column``, as a timestamp.

        ``rollup`` is inlined (a validated int) so that a GROUP BY expression
        matches the SELECT one textually.
        """
        raise NotImplementedError

    def force_index(self, index: str) -> str:
        """A hint after a table's alias making the planner use ``index`` ("" if never needed)."""
        return ""

    def upsert(self, cursor: Any, names: dict[str, str], rows: Sequence[Row]) -> None:
        """Add each row's count to its bucket (rows distinct by key, sorted)."""
        raise NotImplementedError

    def upsert_tail(self, names: dict[str, str]) -> str:
        """The clause making an ``INSERT ... SELECT`` of counts add to stored buckets."""
        return (
            f" ON CONFLICT ({names['conflict']}) DO UPDATE "
            f"SET {names['count']} = {names['table']}.{names['count']} + excluded.{names['count']}"
        )

    def backfill(
        self,
        cursor: Any,
        names: dict[str, str],
        ctes: str,
        params: list[Any],
        changes: str,
        insert: str,
        target: int,
    ) -> tuple[int, int]:
        """Write a backfill chunk inside its transaction; ``(examined, written)``.

        ``ctes`` define ``cmp`` (see ``database._comparison``); ``insert`` is
        the ``INSERT ... SELECT ... FROM cmp WHERE {changes}`` of the rows to
        add, its one extra parameter ``target``.
        """
        raise NotImplementedError

    def insert_new(self, table: str, columns: str, key: str) -> str:
        """An ``INSERT`` of one row that does nothing (row count 0) when ``key`` exists."""
        return (
            f"INSERT INTO {table} ({columns}) VALUES (%s, %s) "  # noqa: S608
            f"ON CONFLICT ({key}) DO NOTHING"
        )

    def delete_bounded(self, table: str, pk: str, where: str) -> str:
        """``DELETE`` of at most ``%s`` (the last parameter) rows matching ``where``."""
        return (
            f"DELETE FROM {table} WHERE {pk} IN ("  # noqa: S608
            f"SELECT {pk} FROM {table} WHERE {where} LIMIT %s)"
        )

    def overflow(self, exc: Exception) -> DataError | None:
        """The ``DataError`` to raise for ``exc`` if it is a bigint overflow, else None."""
        return None

    def is_deadlock(self, exc: Exception) -> bool:
        """Whether ``exc`` is the database breaking a deadlock (the transaction is rolled back)."""
        return False

    def _values(self, rows: Sequence[Row]) -> tuple[str, list[Any]]:
        """``(%s, ...), ...`` for ``rows`` and their parameters, the timestamp adapted."""
        adapt = self.connection.ops.adapt_datetimefield_value
        params: list[Any] = []
        for project_id, stat, environment, rollup, epoch, count in rows:
            params += [
                project_id,
                stat,
                environment,
                rollup,
                adapt(epoch_to_datetime(epoch)),
                count,
            ]
        return ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows)), params

    def _chunks(self, rows: Sequence[Row]) -> Iterator[Sequence[Row]]:
        for offset in range(0, len(rows), self.rows_per_statement):
            yield rows[offset : offset + self.rows_per_statement]


class PostgreSQL(Dialect):
    vendor = "postgresql"

    def epoch(self, column: str) -> str:
        return f"extract(epoch FROM {column})::bigint"

    def bucket(self, column: str, rollup: int) -> str:
        # date_bin floors before its origin too.
        return (
            f"date_bin(make_interval(secs => {int(rollup)}), {column}, "
            "TIMESTAMPTZ '1970-01-01 00:00:00+00')"
        )

    def upsert(self, cursor: Any, names: dict[str, str], rows: Sequence[Row]) -> None:
        # One statement for any batch size: the rows travel as six arrays.
        columns = list(zip(*rows, strict=True))
        sql = (
            f"INSERT INTO {names['table']} ({names['columns']}) "  # noqa: S608
            "SELECT p, s, e, r, to_timestamp(t), c FROM unnest("
            "%s::bigint[], %s::smallint[], %s::varchar[], %s::integer[], %s::bigint[], %s::bigint[]"
            ") AS u(p, s, e, r, t, c) "
            f"ON CONFLICT ({names['conflict']}) DO UPDATE "
            f"SET {names['count']} = {names['table']}.{names['count']} + EXCLUDED.{names['count']}"
        )
        cursor.execute(sql, [list(column) for column in columns])

    def backfill(
        self,
        cursor: Any,
        names: dict[str, str],
        ctes: str,
        params: list[Any],
        changes: str,
        insert: str,
        target: int,
    ) -> tuple[int, int]:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BACKFILL_LOCK])
        # Rows in the order ``upsert`` locks them (environment by code
        # point, as Python sorts), so a backfill and an incr_many batch
        # do not deadlock.
        cursor.execute(
            f"WITH {ctes}, written AS ({insert} "  # noqa: S608
            'ORDER BY p, st, e COLLATE "C", b'
            f"{self.upsert_tail(names)} RETURNING 1) "
            "SELECT (SELECT COUNT(*) FROM cmp), (SELECT COUNT(*) FROM written)",
            [*params, target],
        )
        examined, written = cursor.fetchone()
        return int(examined), int(written)


# SQLite has no error for an integer overflow in ``+``: the sum silently
# becomes a REAL (9.223372036854776e+18), which the INTEGER column then keeps.
# ``abs()`` of the smallest 64-bit integer is one of the few expressions
# that does fail ("integer overflow"), so the SET clause takes that branch
# whenever the sum is not an integer any more. The operand depends on the
# row so that SQLite cannot evaluate it once, up front, as a constant.
_SQLITE_OVERFLOW = "integer overflow"


class SQLite(Dialect):
    vendor = "sqlite"

    def epoch(self, column: str) -> str:
        return f"CAST(strftime('%%s', {column}) AS INTEGER)"

    def bucket(self, column: str, rollup: int) -> str:
        # Floor, as Python's ``%``: SQLite's ``/`` and ``%`` round toward zero,
        # which before 1970 would put a time in the bucket after its own. Same
        # text form Django writes ('YYYY-MM-DD HH:MM:SS'), so the unique
        # constraint collides with rows written by ``upsert``.
        seconds = self.epoch(column)
        return (
            f"datetime({seconds} - (({seconds} %% {int(rollup)}) + {int(rollup)}) "
            f"%% {int(rollup)}, 'unixepoch')"
        )

    def upsert(self, cursor: Any, names: dict[str, str], rows: Sequence[Row]) -> None:
        total = f"{names['table']}.{names['count']} + excluded.{names['count']}"
        # See _SQLITE_OVERFLOW: a sum that is no longer an integer fails the statement.
        set_count = (
            f"{names['count']} = CASE WHEN typeof({total}) = 'integer' THEN {total} "
            f"ELSE abs(-9223372036854775807 - 1 + 0 * excluded.{names['count']}) END"
        )
        for chunk in self._chunks(rows):
            values, params = self._values(chunk)
            cursor.execute(
                f"INSERT INTO {names['table']} ({names['columns']}) VALUES {values} "  # noqa: S608
                f"ON CONFLICT ({names['conflict']}) DO UPDATE SET {set_count}",
                params,
            )

    @property
    def rows_per_statement(self) -> int:  # type: ignore[override]
        return max(1, (self.connection.features.max_query_params or 999) // 6)

    def backfill(
        self,
        cursor: Any,
        names: dict[str, str],
        ctes: str,
        params: list[Any],
        changes: str,
        insert: str,
        target: int,
    ) -> tuple[int, int]:
        cursor.execute(f"WITH {ctes} {insert}{self.upsert_tail(names)}", [*params, target])
        # sqlite3 reports no rowcount for a statement starting with WITH.
        cursor.execute("SELECT changes()")
        (written,) = cursor.fetchone()
        # The comparison has as many rows after the write as before it: every
        # new target row matches a source group, and no row is removed.
        cursor.execute(f"WITH {ctes} SELECT COUNT(*) FROM cmp", params)  # noqa: S608
        (examined,) = cursor.fetchone()
        return int(examined), int(written)

    def overflow(self, exc: Exception) -> DataError | None:
        if isinstance(exc, OperationalError) and str(exc) == _SQLITE_OVERFLOW:
            return DataError(f"{OVERFLOW_MESSAGE} ({exc})")
        return None


# MariaDB and MySQL error numbers.
ER_DATA_OUT_OF_RANGE = 1690  # "BIGINT value is out of range in ..."
ER_LOCK_DEADLOCK = 1213


class MySQL(Dialect):
    """MariaDB 10.6+ (tested) and MySQL 8.0.19+ (untested), strict ``sql_mode``.

    ``ON DUPLICATE KEY UPDATE`` fires on any unique index, the primary key
    included: our inserts never supply the id, and the bucket key is the
    table's only other unique index (a test holds it to that).
    """

    vendor = "mysql"

    def epoch(self, column: str) -> str:
        # Arithmetic on the stored UTC wall-clock time: UNIX_TIMESTAMP() would
        # read it in the session's time zone.
        return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {column})"

    def bigint(self, expression: str) -> str:
        return f"CAST({expression} AS SIGNED)"

    def sum_bigint(self, expression: str) -> str:
        # SUM is a DECIMAL here, and CAST clamps it to the bigint range with a
        # mere warning. Out of range, add the clamped value's own sign times
        # the maximum: integer arithmetic that overflows fails (1690).
        total = f"SUM({expression})"
        return (
            f"({self.bigint(total)} + CASE WHEN {total} > 9223372036854775807 "
            f"OR {total} < -9223372036854775808 "
            f"THEN {self.bigint(f'SIGN({total})')} * 9223372036854775807 ELSE 0 END)"
        )

    def bucket(self, column: str, rollup: int) -> str:
        seconds = self.epoch(column)
        return (
            f"TIMESTAMPADD(SECOND, FLOOR({seconds} / {int(rollup)}) * {int(rollup)}, "
            "'1970-01-01 00:00:00')"
        )

    def force_index(self, index: str) -> str:
        # Without partial indexes the (project, environment) index holds every
        # row, and its statistics are an average: with most rows in "" the
        # planner may walk the unique key's project prefix instead (500,000
        # rows read for an absent environment at 3M rows, 155 ms, against
        # one probe, 0.01 ms).
        return f" FORCE INDEX ({self.connection.ops.quote_name(index)})"

    def _added(self, names: dict[str, str]) -> tuple[str, str]:
        """The row alias after ``VALUES (...)`` and the SET clause adding the new count."""
        count = names["count"]
        if self.connection.mysql_is_mariadb:  # type: ignore[attr-defined]
            return "", f"{count} = {count} + VALUE({count})"
        # MySQL 8.0.20 deprecates VALUES() here for the row alias (8.0.19+).
        return " AS new", f"{count} = {names['table']}.{count} + new.{count}"

    def upsert(self, cursor: Any, names: dict[str, str], rows: Sequence[Row]) -> None:
        alias, set_count = self._added(names)
        for chunk in self._chunks(rows):
            values, params = self._values(chunk)
            cursor.execute(
                f"INSERT INTO {names['table']} ({names['columns']}) VALUES {values}{alias} "  # noqa: S608
                f"ON DUPLICATE KEY UPDATE {set_count}",
                params,
            )

    def upsert_tail(self, names: dict[str, str]) -> str:
        # An INSERT ... SELECT takes no row alias: VALUES() names the new row on both.
        count = names["count"]
        return f" ON DUPLICATE KEY UPDATE {count} = {count} + VALUES({count})"

    def backfill(
        self,
        cursor: Any,
        names: dict[str, str],
        ctes: str,
        params: list[Any],
        changes: str,
        insert: str,
        target: int,
    ) -> tuple[int, int]:
        # Two backfills take turns on a named lock (held by the session:
        # released after the chunk). The affected-row count of ON DUPLICATE
        # KEY mixes inserts (1) and updates (2), so the rows to write are
        # counted first, in the same comparison; an increment committed in
        # between changes a bucket's value, not whether the chunk writes it.
        cursor.execute("SELECT GET_LOCK(%s, %s)", [BACKFILL_LOCK_NAME, BACKFILL_LOCK_TIMEOUT])
        (locked,) = cursor.fetchone()
        if locked != 1:
            raise OperationalError(f"backfill: {BACKFILL_LOCK_NAME} not acquired in time")
        try:
            cursor.execute(
                f"WITH {ctes} SELECT COUNT(*), "  # noqa: S608
                f"COALESCE(SUM(CASE WHEN {changes} THEN 1 ELSE 0 END), 0) FROM cmp",
                params,
            )
            examined, written = cursor.fetchone()
            # MariaDB takes the WITH inside the INSERT's SELECT, not before the
            # INSERT; rows in upsert's key order (environment by code point,
            # as its binary collation), so that a backfill and a batch do not
            # deadlock.
            into, _, select = insert.partition(" SELECT ")
            cursor.execute(
                f"{into} WITH {ctes} SELECT {select} "  # noqa: S608
                f"ORDER BY p, st, e, b{self.upsert_tail(names)}",
                [*params, target],
            )
        finally:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [BACKFILL_LOCK_NAME])
        return int(examined), int(written)

    def insert_new(self, table: str, columns: str, key: str) -> str:
        # Django's MySQL connections count found rows as affected: an
        # ON DUPLICATE KEY no-op would report 1 as an insert does. IGNORE
        # reports 0; it would also turn other errors into warnings, and our
        # two values (an id we generate, a timestamp) raise none.
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES (%s, %s)"  # noqa: S608

    def delete_bounded(self, table: str, pk: str, where: str) -> str:
        # No LIMIT in an IN subquery, nor a subquery on the deleted table.
        return f"DELETE FROM {table} WHERE {where} ORDER BY {pk} LIMIT %s"  # noqa: S608

    def overflow(self, exc: Exception) -> DataError | None:
        # Django's MySQL cursor raises 1690 as an IntegrityError.
        if isinstance(exc, (IntegrityError, OperationalError, DataError)) and (
            exc.args and exc.args[0] == ER_DATA_OUT_OF_RANGE
        ):
            return DataError(f"{OVERFLOW_MESSAGE} ({exc.args[1] if len(exc.args) > 1 else exc})")
        return None

    def is_deadlock(self, exc: Exception) -> bool:
        return bool(exc.args) and exc.args[0] == ER_LOCK_DEADLOCK


DIALECTS: dict[str, type[Dialect]] = {d.vendor: d for d in (PostgreSQL, SQLite, MySQL)}
SUPPORTED_VENDORS = frozenset(DIALECTS)


def dialect(connection: BaseDatabaseWrapper) -> Dialect:
    """The dialect of ``connection``; NotImplementedError for a vendor we do not speak."""
    try:
        return DIALECTS[connection.vendor](connection)
    except KeyError:
        raise NotImplementedError(
            f"project_stats supports PostgreSQL, MariaDB, MySQL and SQLite, not {connection.vendor}"
        ) from None


@contextmanager
def overflow_as_data_error(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """Raise a vendor's bigint overflow as the ``DataError`` PostgreSQL raises.

    Wrap the ``atomic`` block, so that the rollback has happened already.
    """
    try:
        yield
    except (OperationalError, IntegrityError) as exc:
        translated = dialect(connection).overflow(exc)
        if translated is None:
            raise
        raise translated from exc
