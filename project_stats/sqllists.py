"""A list of values bound as ONE parameter, whatever its length.

``column IN (%s, %s, ...)`` binds one parameter per value. PostgreSQL's
protocol carries at most 65,535 parameters in a statement and SQLite at most
32,766 variables (its default build), so an organization with more projects
than that could not be read; and every length is another statement text,
which on PostgreSQL is another prepared statement (psycopg prepares each
text it runs with :func:`project_stats.prepared.fetch_all`: about 0.8 MB of
backend memory each).

:func:`any_of` writes the condition with the whole list as one parameter:

- PostgreSQL: ``column = ANY(CAST(%s AS bigint[]))``, the list bound as one
  array (cast to ``bigint[]`` for every integer column, to the column's type
  for others, so an empty list or a driver's own choice of integer width
  never changes the statement's meaning). The planner uses the array as an
  index condition, as it does an ``IN`` list. The parameter's type is the
  same for every call of a shape: Django types a field's values (psycopg's
  ``Int2``/``Int4``/``Int8``), and :func:`project_stats.prepared.fetch_all`
  binds lists of plain ints as ``bigint[]``.
- SQLite: ``column IN (SELECT value FROM json_each(%s))``, the list bound as
  one JSON array (SQLite's JSON functions, which the token's ``JSONField``
  needs too).
- MariaDB (and MySQL): a plain ``column IN (%s, %s, ...)``. mysqlclient
  interpolates parameters into the text on the client: no parameter limit,
  no prepared statement per length. ``IN (SELECT v FROM JSON_TABLE(%s, ...))``
  was measured instead (3M rows, one hour of 10 s buckets of 3 projects): the
  planner probes the unique key by project only and reads every bucket of
  each, 40 ms against 1.2 ms for 3 ids, 39 ms against 10 ms for 1,000 ids.

Values are bound through the field's ``get_db_prep_value``, as Django binds
them; integers outside 64 bits are left out (no row can hold them). One text
for every length: the statement is prepared once per connection.

:class:`AnyOf` is the same condition as an ORM lookup expression, e.g.
``EventCount.objects.filter(AnyOf(F("project_id"), ids))``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Lookup

__all__ = ["AnyOf", "any_of", "array_type"]

# The integer fields: every one is bound as bigint[] on PostgreSQL.
_INTEGER_FIELDS = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
    }
)
_AUTO_FIELDS = frozenset({"AutoField", "BigAutoField", "SmallAutoField"})
_MIN_BIGINT, _MAX_BIGINT = -(2**63), 2**63 - 1


def _target(field: Field[Any, Any]) -> Field[Any, Any]:
    """The field whose values a column holds (a foreign key's target field)."""
    while field.is_relation and getattr(field, "target_field", None) is not None:
        field = cast("Field[Any, Any]", field.target_field)  # type: ignore[attr-defined]
    return field


def _is_integer(field: Field[Any, Any]) -> bool:
    return _target(field).get_internal_type() in _INTEGER_FIELDS


def array_type(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    """PostgreSQL's array type for values of ``field``: ``bigint[]`` for any integer."""
    if _is_integer(field):
        return "bigint[]"
    return f"{_target(field).db_type(connection)}[]"


def any_of(
    connection: BaseDatabaseWrapper, column: str, field: Field[Any, Any], values: Iterable[Any]
) -> tuple[str, list[Any]]:
    """SQL saying ``column`` (SQL) is one of ``values`` of ``field``, and its ONE parameter.

    An empty list matches no row.
    """
    if connection.vendor == "mysql" and _target(field).get_internal_type() in _AUTO_FIELDS:
        # No row has id 0, and MariaDB's backend refuses to bind it.
        values = [value for value in values if value != 0]
    prepped = [field.get_db_prep_value(value, connection) for value in values]
    if _is_integer(field):
        prepped = [
            value
            for value in prepped
            if not isinstance(value, int) or _MIN_BIGINT <= value <= _MAX_BIGINT
        ]
    if connection.vendor == "postgresql":
        return f"{column} = ANY(CAST(%s AS {array_type(field, connection)}))", [prepped]
    if connection.vendor == "mysql":
        if not prepped:
            return "1 = 0", []
        return f"{column} IN ({', '.join(['%s'] * len(prepped))})", prepped
    # The JSON array's values arrive as SQLite values: integers, reals, text.
    return f"{column} IN (SELECT value FROM json_each(%s))", [json.dumps(prepped)]  # noqa: S608


class AnyOf(Lookup):  # type: ignore[type-arg]
    """``lhs`` is one of the values: :func:`any_of` as a filter expression.

    ``EventCount.objects.filter(AnyOf(F("project_id"), ids))``; ``exclude``
    and ``Q`` take it too.
    """

    lookup_name = "any_of"
    prepare_rhs = False  # values are prepared in as_sql, through the field

    def __init__(self, lhs: Any, values: Iterable[Any]) -> None:
        super().__init__(lhs, tuple(values))

    def as_sql(self, compiler: Any, connection: BaseDatabaseWrapper) -> tuple[str, list[Any]]:
        lhs_sql, lhs_params = compiler.compile(self.lhs)
        sql, params = any_of(connection, lhs_sql, self.lhs.output_field, self.rhs)
        return sql, [*lhs_params, *params]
