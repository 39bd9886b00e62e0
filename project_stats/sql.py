"""Hand-written SQL for the lookups every API request makes.

The token (with its user) and the project (with the caller's membership)
are looked up on every request. Compiling those as ORM querysets costs more
than the database takes to answer them, so they are written here once, with
table and column names taken from the models, and rows become model
instances through the same converters the ORM applies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from .models import ApiToken, Organization, OrganizationMember, Project

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


class _Columns:
    """One model's concrete columns: how to select them and rebuild an instance."""

    def __init__(self, model: type[Model], connection: BaseDatabaseWrapper, alias: str) -> None:
        self.model = model
        self.alias = alias
        fields = list(model._meta.concrete_fields)
        self.attnames = [f.attname for f in fields]
        qn = connection.ops.quote_name
        self.select = ", ".join(f"{alias}.{qn(f.column)}" for f in fields)
        self.table = f"{qn(model._meta.db_table)} {alias}"
        self.converters: list[tuple[int, list[Converter], Any]] = []
        for i, field in enumerate(fields):
            col = field.get_col(alias)
            found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)  # type: ignore[attr-defined]
            if found:
                self.converters.append((i, found, col))

    def build(self, connection: BaseDatabaseWrapper, values: Sequence[Any]) -> Model:
        row = list(values)
        for i, converters, col in self.converters:
            for converter in converters:
                row[i] = converter(row[i], col, connection)
        return self.model.from_db(connection.alias, self.attnames, row)

    def __len__(self) -> int:
        return len(self.attnames)


_CACHE: dict[tuple[str, str, str], Any] = {}


def _cached(key: tuple[str, str, str], build: Callable[[], Any]) -> Any:
    value = _CACHE.get(key)
    if value is None:
        value = _CACHE[key] = build()
    return value


def _column(model: type[Model], name: str, connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(cast("Field[Any, Any]", model._meta.get_field(name)).column)


def tokens_with_user(digest: str) -> list[ApiToken]:
    """The token (if any) whose digest is ``digest``, with its ``user`` loaded."""
    connection = connections[router.db_for_read(ApiToken)]
    user_model = get_user_model()

    def build() -> tuple[_Columns, _Columns, str]:
        token, user = _Columns(ApiToken, connection, "t"), _Columns(user_model, connection, "u")
        user_pk = _column(user_model, user_model._meta.pk.name, connection)
        sql = (
            f"SELECT {token.select}, {user.select} FROM {token.table} "  # noqa: S608
            f"JOIN {user.table} ON u.{user_pk} = t.{_column(ApiToken, 'user', connection)} "
            f"WHERE t.{_column(ApiToken, 'digest', connection)} = %s"
        )
        return token, user, sql

    token_cols, user_cols, sql = _cached(
        ("token", connection.vendor, user_model._meta.label), build
    )
    found = []
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        for values in cursor.fetchall():
            token = token_cols.build(connection, values[: len(token_cols)])
            token.user = user_cols.build(connection, values[len(token_cols) :])
            found.append(token)
    return found


def visible_project(
    organization_slug: str, project_slug: str, user_id: Any, *, superuser: bool
) -> Project | None:
    """The project with its organization, if the user is a member (or a superuser)."""
    connection = connections[router.db_for_read(Project)]

    def build() -> tuple[_Columns, _Columns, str]:
        project, org = _Columns(Project, connection, "p"), _Columns(Organization, connection, "o")
        member = connection.ops.quote_name(OrganizationMember._meta.db_table)

        def col(model: type[Model], name: str) -> str:
            return _column(model, name, connection)

        sql = (
            f"SELECT {project.select}, {org.select} FROM {project.table} "  # noqa: S608
            f"JOIN {org.table} ON o.{col(Organization, 'id')} = p.{col(Project, 'organization')} "
            f"WHERE o.{col(Organization, 'slug')} = %s AND p.{col(Project, 'slug')} = %s "
            f"AND (%s OR EXISTS (SELECT 1 FROM {member} m "
            f"WHERE m.{col(OrganizationMember, 'organization')} = o.{col(Organization, 'id')} "
            f"AND m.{col(OrganizationMember, 'user')} = %s))"
        )
        return project, org, sql

    project_cols, org_cols, sql = _cached(("project", connection.vendor, ""), build)
    with connection.cursor() as cursor:
        cursor.execute(sql, [organization_slug, project_slug, superuser, user_id])
        values = cursor.fetchone()
    if values is None:
        return None
    project = project_cols.build(connection, values[: len(project_cols)])
    project.organization = org_cols.build(connection, values[len(project_cols) :])
    return cast(Project, project)
