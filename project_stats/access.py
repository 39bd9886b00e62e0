"""The API's read path in one statement: who asks, what they may see, and the counts.

A stats request needs the token with its user's flags, the project or
organization of the path if that user may see it, whether the requested
environment exists and the counts of the requested series. On a database
across a network each round trip costs about as much as all of DRF's work
for the request, so :func:`look_up` asks for all of it in one statement and
returns plain values: no model instances are built here.

The counts part comes from :mod:`project_stats.tsdb` (a
:class:`~project_stats.tsdb.RangeQuery`), which alone knows how counts are
stored. Nothing read here outlives the request: every request reads the
token, the user's flags and the membership afresh, so revocation, expiry,
deactivation, removal from an organization and renames take effect on the
next request in every process.

Paths name organizations and projects by id or slug (Sentry's
``organization_id_or_slug``/``project_id_or_slug``): a segment of ASCII
digits only is the numeric id, anything else a slug. Both go through the
same statement; only the compared column differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, Q
from django.utils.functional import LazyObject, empty

from . import prepared, tsdb
from .constants import MAX_ID, MAX_ID_DIGITS
from .models import (
    LAST_USED_INTERVAL,
    ApiToken,
    EventCount,
    Organization,
    OrganizationMember,
    Project,
)
from .sqllists import any_of
from .tsdb.dialects import dialect

__all__ = [
    "Found",
    "IdOrSlug",
    "Target",
    "TokenCredential",
    "TokenRow",
    "TokenUser",
    "id_or_slug",
    "look_up",
    "match",
]

IdOrSlug = int | str
# Longest slug a row can hold (both models use SlugField(max_length=50)).
MAX_SLUG_LENGTH = 50
# The widest row a counts read selects (a StatsRangeQuery's).
COUNT_COLUMNS = 4


def id_or_slug(value: object) -> IdOrSlug | None:
    """A path segment as an id (ASCII digits only) or a slug; None if no row can match.

    Rejected before the database: empty, too long, NUL characters and text
    that cannot be encoded (PostgreSQL answers those with an error, a 500),
    ids of more than :data:`MAX_ID_DIGITS` digits or past :data:`MAX_ID`.
    """
    if not isinstance(value, str) or "\x00" in value:
        return None
    if value.isascii() and value.isdigit():
        if len(value) > MAX_ID_DIGITS:
            return None
        number = int(value)
        # Ids start at 1; MariaDB's backend refuses to bind 0 for an AutoField.
        return number if 0 < number <= MAX_ID else None
    if not 0 < len(value) <= MAX_SLUG_LENGTH:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def match(value: IdOrSlug, prefix: str = "") -> Q:
    """ORM filter for an id or a slug, e.g. ``match(x, "organization__")``."""
    return Q(**{f"{prefix}{'pk' if isinstance(value, int) else 'slug'}": value})


@dataclass(frozen=True)
class TokenRow:
    """A token's state as the statement read it: the few values the checks need."""

    pk: int
    scopes: tuple[str, ...]
    revoked: bool
    expired: bool
    # last_used is unset or older than LAST_USED_INTERVAL: write it.
    stale: bool
    user_pk: Any
    user_active: bool
    user_superuser: bool


@dataclass(frozen=True)
class TokenCredential:
    """``request.auth`` of a stats request: the token's id, scopes and user id.

    The stats views authenticate with the access statement's row and never
    build an ``ApiToken`` instance; :func:`~project_stats.permissions.request_scopes`
    reads the scopes from either.
    """

    pk: int
    scopes: tuple[str, ...]
    user_id: Any


@dataclass(frozen=True)
class Target:
    """The project (or organization) of the path, found and visible to the caller."""

    pk: int
    slug: str
    organization_id: int


@dataclass
class Found:
    """What :func:`look_up` read."""

    token: TokenRow | None = None
    target: Target | None = None
    # Whether the target's organization has counts for the environment asked
    # about; None when none was asked about (or the target was not found).
    environment_exists: bool | None = None
    # (project_id, bucket_start, count) rows, or None when the counts were not read.
    counts: list[tuple[Any, ...]] | None = None
    # Ids of the organization's projects read (``list_projects``), unordered.
    project_ids: list[int] = field(default_factory=list)
    # Their slugs by id, when asked for (``project_slugs``).
    project_slugs: dict[int, str] = field(default_factory=dict)


class TokenUser(LazyObject):
    """The user of a token: its primary key and flags, the real instance when asked for more.

    ``pk``, ``is_active``, ``is_superuser``, ``is_authenticated`` and
    ``is_anonymous`` answer from the access statement; anything else (the
    username in the browsable API, ``isinstance``, comparisons) loads the
    user once from the database.
    """

    is_authenticated = True
    is_anonymous = False

    def __init__(self, model: type[Model], pk: Any, *, is_active: bool, is_superuser: bool):
        super().__init__()
        # Our own slots: LazyObject forwards other attribute writes to the user.
        self.__dict__.update(
            _user_model=model, _user_pk=pk, _is_active=is_active, _is_superuser=is_superuser
        )

    def _setup(self) -> None:
        model = self.__dict__["_user_model"]
        manager = model._default_manager.db_manager(router.db_for_read(model))
        self._wrapped = manager.get(pk=self.__dict__["_user_pk"])

    def __bool__(self) -> bool:
        return True  # ``if request.user`` must not load the user

    @property
    def pk(self) -> Any:
        return self.__dict__["_user_pk"]

    @property
    def is_active(self) -> bool:
        return bool(self.__dict__["_is_active"])

    @property
    def is_superuser(self) -> bool:
        return bool(self.__dict__["_is_superuser"])

    @property
    def loaded(self) -> bool:
        """Whether the real instance has been loaded (for tests and diagnostics)."""
        return self._wrapped is not empty


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    return cast("Field[Any, Any]", model._meta.pk if name == "pk" else model._meta.get_field(name))


def _column(model: type[Model], name: str, connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(_field(model, name).column)


def _prep(model: type[Model], name: str, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """``value`` as the field ``name`` binds it (``"pk"``: the primary key)."""
    return _field(model, name).get_db_prep_value(value, connection)


def _user_flags(connection: BaseDatabaseWrapper, user_id: str) -> tuple[str, dict[str, str]]:
    """``(joins, {flag: SQL})`` for ``is_active`` and ``is_superuser`` of user ``user_id``.

    A flag that is a concrete field is read from the table that holds it (a
    multi-table-inheritance user keeps them in a parent's table, whose
    primary key has the same value); a flag that is not a field takes the
    model's class attribute (``AbstractBaseUser.is_active`` is ``True``), or
    False for a user model without ``is_superuser``.
    """
    qn = connection.ops.quote_name
    user_model = get_user_model()
    tables: dict[type[Model], str] = {}
    joins = []
    flags = {}
    for name in ("is_active", "is_superuser"):
        try:
            found = user_model._meta.get_field(name)
        except Exception:  # noqa: BLE001 - FieldDoesNotExist: not a field on this model
            found = None
        if isinstance(found, Field) and found.concrete and not found.is_relation:
            # A concrete field belongs to a concrete model.
            holder = cast("type[Model]", found.model._meta.concrete_model)
            alias = tables.get(holder)
            if alias is None:
                alias = tables[holder] = f"u{len(tables)}"
                joins.append(
                    f" JOIN {qn(holder._meta.db_table)} {alias} "
                    f"ON {alias}.{_column(holder, 'pk', connection)} = {user_id}"
                )
            flags[name] = f"{alias}.{qn(found.column)}"
        else:
            constant = getattr(user_model, name, False)
            flags[name] = "(1 = 1)" if constant is True else "(1 = 0)"
    return "".join(joins), flags


def _token_cte(
    connection: BaseDatabaseWrapper, digest: str, now: datetime
) -> tuple[str, list[Any]]:
    """The token with its user's flags; columns tid, sc, rv, ex, st, uid, ac, su."""
    qn = connection.ops.quote_name

    def col(name: str) -> str:
        return f"t.{_column(ApiToken, name, connection)}"

    user_id = col("user")
    joins, flags = _user_flags(connection, user_id)
    sql = (
        f"SELECT t.{_column(ApiToken, 'pk', connection)} AS tid, {col('scopes')} AS sc, "  # noqa: S608
        f"({col('revoked_at')} IS NOT NULL) AS rv, "
        f"({col('expires_at')} IS NOT NULL AND {col('expires_at')} <= %s) AS ex, "
        f"({col('last_used')} IS NULL OR {col('last_used')} < %s) AS st, "
        f"{user_id} AS uid, {flags['is_active']} AS ac, {flags['is_superuser']} AS su "
        f"FROM {qn(ApiToken._meta.db_table)} t{joins} WHERE {col('digest')} = %s"
    )
    params = [
        _prep(ApiToken, "expires_at", now, connection),
        _prep(ApiToken, "last_used", now - LAST_USED_INTERVAL, connection),
        _prep(ApiToken, "digest", digest, connection),
    ]
    return sql, params


def _id_or_slug_column(
    model: type[Model], value: IdOrSlug, connection: BaseDatabaseWrapper
) -> tuple[str, Any]:
    """The quoted column to compare and the value bound through that column's field."""
    if isinstance(value, int):
        return _column(model, "pk", connection), _prep(model, "pk", value, connection)
    return _column(model, "slug", connection), _prep(model, "slug", value, connection)


def _target_cte(
    connection: BaseDatabaseWrapper,
    organization: IdOrSlug | None,
    project: IdOrSlug | None,
    visible: str,
    visible_params: Sequence[Any],
) -> tuple[str, list[Any]]:
    """The path's project (or organization) if ``visible``; columns pid, ps, oid.

    ``visible`` is a boolean SQL expression over ``o`` (the organization).
    No row when ``organization`` is None (a path no row can match).
    """
    qn = connection.ops.quote_name
    org_table = qn(Organization._meta.db_table)
    org_pk = _column(Organization, "pk", connection)
    if project is None or organization is None:
        sql = (
            f"SELECT o.{org_pk} AS pid, o.{_column(Organization, 'slug', connection)} AS ps, "  # noqa: S608
            f"o.{org_pk} AS oid FROM {org_table} o WHERE "
        )
        if organization is None:
            return sql + "1 = 0", []  # typed columns, no row
        org_column, org_value = _id_or_slug_column(Organization, organization, connection)
        return sql + f"o.{org_column} = %s AND {visible}", [org_value, *visible_params]
    org_column, org_value = _id_or_slug_column(Organization, organization, connection)
    project_pk = _column(Project, "pk", connection)
    project_org = _column(Project, "organization", connection)
    project_column, project_value = _id_or_slug_column(Project, project, connection)
    sql = (
        f"SELECT p.{project_pk} AS pid, p.{_column(Project, 'slug', connection)} AS ps, "  # noqa: S608
        f"p.{project_org} AS oid FROM {qn(Project._meta.db_table)} p "
        f"JOIN {org_table} o ON o.{org_pk} = p.{project_org} "
        f"WHERE o.{org_column} = %s AND p.{project_column} = %s AND {visible}"
    )
    return sql, [org_value, project_value, *visible_params]


def _member_sql(connection: BaseDatabaseWrapper, user_id: str) -> str:
    """EXISTS: the user ``user_id`` (SQL) is a member of organization ``o``."""
    qn = connection.ops.quote_name
    return (
        f"EXISTS (SELECT 1 FROM {qn(OrganizationMember._meta.db_table)} m "  # noqa: S608
        f"WHERE m.{_column(OrganizationMember, 'organization', connection)} = "
        f"o.{_column(Organization, 'pk', connection)} "
        f"AND m.{_column(OrganizationMember, 'user', connection)} = {user_id})"
    )


def _bool(value: Any) -> bool:
    return bool(value)  # SQLite answers 0/1


def look_up(
    *,
    organization: IdOrSlug | None,
    project: IdOrSlug | None = None,
    digest: str | None = None,
    user: AbstractBaseUser | TokenUser | None = None,
    read: tsdb.RangeQuery | tsdb.StatsRangeQuery | None = None,
    environment: str | None = None,
    project_ids: Sequence[int] | None = None,
    summed: bool = False,
    list_projects: bool = False,
    max_projects: int | None = None,
    require_projects: int | None = None,
    project_slugs: bool = False,
    now: datetime,
) -> Found:
    """Read everything a stats request decides on, in one statement.

    The caller is the token whose digest is ``digest``, or the (already
    authenticated, active) ``user``. The target is the project
    ``organization/project``, or the organization alone when ``project`` is
    None; it is found only if the caller may see it: a valid token (not
    revoked or expired, active user) or the given user, who is a member of
    the organization or a superuser. With ``environment``, whether the
    target's organization has counts for it. With ``read``, the counts of the
    target project (of all the organization's projects for an organization
    target, or those of ``project_ids``, added up per bucket with
    ``summed``), unless the counts are kept on another database (then
    ``Found.counts`` is None and the caller reads them through ``tsdb``).
    With ``list_projects`` (organization targets), the ids of those projects;
    with ``max_projects`` too, the counts are read only if there are at most
    that many (the database counts them first, once, before any count);
    with ``require_projects``, only if there are exactly that many (every id
    of ``project_ids`` is one of the organization's projects); with
    ``project_slugs``, their slugs as well.
    ``organization`` None stands for a path no row can match: only the token
    is read.
    """
    model: type[Model] = ApiToken if digest is not None else Project
    alias = router.db_for_read(model)
    connection = connections[alias]
    params: list[Any] = []
    ctes = []
    if digest is not None:
        token_sql, token_params = _token_cte(connection, digest, now)
        ctes.append(f"lookup AS ({token_sql})")
        params += token_params
        visible = (
            "EXISTS (SELECT 1 FROM lookup WHERE NOT lookup.rv AND NOT lookup.ex AND lookup.ac "  # noqa: S608
            f"AND (lookup.su OR {_member_sql(connection, 'lookup.uid')}))"
        )
        visible_params: list[Any] = []
        source = "lookup"
        columns = ("tid", "sc", "rv", "ex", "st", "uid", "ac", "su")
        token_columns = ", ".join(f"lookup.{name}" for name in columns)
    else:
        if user is None:
            raise ValueError("look_up needs a token digest or a user")
        visible = f"(%s OR {_member_sql(connection, '%s')})"
        visible_params = [
            bool(getattr(user, "is_superuser", False)),
            _prep(get_user_model(), "pk", user.pk, connection),
        ]
        source = "(SELECT 1 AS one) d"
        token_columns = ", ".join(["NULL"] * 8)
    target_sql, target_params = _target_cte(
        connection, organization, project, visible, visible_params
    )
    ctes.append(f"target AS ({target_sql})")
    params += target_params

    environment_column = "NULL"
    if environment is not None:
        found_env = tsdb.environment_sql(connection, "target.oid", environment)
        if found_env is None:
            environment_column = "(1 = 0)"
        else:
            environment_column, env_params = found_env
            params += env_params

    # PostgreSQL types a UNION's columns branch by branch: the counts' columns
    # must not start out as untyped NULLs. Reads select up to COUNT_COLUMNS.
    typed_nulls = ", ".join([dialect(connection).bigint("NULL")] * COUNT_COLUMNS)
    sql = (
        f"WITH {', '.join(ctes)} SELECT 0, {token_columns}, target.pid, target.ps, target.oid, "  # noqa: S608
        f"{environment_column}, {typed_nulls} FROM {source} LEFT JOIN target ON 1 = 1"
    )
    projects = "SELECT pid FROM target"
    projects_params: list[Any] = []
    if project is None:
        qn = connection.ops.quote_name
        pk_column = _column(Project, "pk", connection)
        projects = (
            f"SELECT {pk_column} FROM {qn(Project._meta.db_table)} "  # noqa: S608
            f"WHERE {_column(Project, 'organization', connection)} IN (SELECT oid FROM target)"
        )
        if project_ids is not None:
            wanted = [pk for pk in project_ids if 0 < pk <= MAX_ID]
            if wanted:
                # One parameter however many ids: one statement text.
                condition, projects_params = any_of(
                    connection, pk_column, _field(Project, "pk"), wanted
                )
                projects += f" AND {condition}"
            else:
                projects += " AND 1 = 0"
        if list_projects and project_slugs:
            # The slug in the target's slug column (text on every vendor).
            sql += (
                f" UNION ALL SELECT 2, {', '.join(['NULL'] * 9)}, "  # noqa: S608
                f"s.{_column(Project, 'slug', connection)}, NULL, NULL, s.{pk_column}, "
                f"{', '.join(['NULL'] * (COUNT_COLUMNS - 1))} "
                f"FROM {qn(Project._meta.db_table)} s WHERE s.{pk_column} IN ({projects})"
            )
            params += projects_params
        elif list_projects:
            sql += (
                f" UNION ALL SELECT 2, {', '.join(['NULL'] * 12)}, i.*, "  # noqa: S608
                f"{', '.join(['NULL'] * (COUNT_COLUMNS - 1))} "
                f"FROM ({projects}) i"
            )
            params += projects_params
    counts_read = False
    if read is not None and router.db_for_read(EventCount) == alias:
        counts = read.sql(
            connection, projects, projects_params, summed=summed, single=project is not None
        )
        counts_read = True
        if counts is not None:
            counts_sql, counts_params = counts
            padding = "".join([", NULL"] * (COUNT_COLUMNS - read.columns))
            sql += (
                f" UNION ALL SELECT 1, {', '.join(['NULL'] * 12)}, c.*{padding} "  # noqa: S608
                f"FROM ({counts_sql}) c"
            )
            params += counts_params
            conditions = []
            if list_projects and max_projects is not None:
                conditions.append("<= %s")
                params += [*projects_params, max_projects]
            if project is None and require_projects is not None:
                conditions.append("= %s")
                params += [*projects_params, require_projects]
            if conditions:
                # Uncorrelated: evaluated once, before the counts are scanned.
                counted = f"(SELECT COUNT(*) FROM ({projects}) n)"  # noqa: S608
                sql += " WHERE " + " AND ".join(f"{counted} {c}" for c in conditions)

    found = Found(counts=[] if counts_read else None)
    width = read.columns if read is not None else 0
    for row in prepared.fetch_all(connection, sql, params):
        if row[0] == 1:
            found.counts.append(tuple(row[13 : 13 + width]))  # type: ignore[union-attr]
            continue
        if row[0] == 2:
            found.project_ids.append(int(row[13]))
            if project_slugs:
                found.project_slugs[int(row[13])] = str(row[10])
            continue
        if digest is not None:
            found.token = _token_row(connection, row[1:9])
        if row[9] is not None:
            found.target = Target(int(row[9]), str(row[10]), int(row[11]))
            if environment is not None:
                found.environment_exists = _bool(row[12])
    return found


def _token_row(connection: BaseDatabaseWrapper, values: Sequence[Any]) -> TokenRow:
    tid, scopes, revoked, expired, stale, user_pk, active, superuser = values
    decoded = _field(ApiToken, "scopes").from_db_value(scopes, None, connection)  # type: ignore[attr-defined]
    return TokenRow(
        pk=int(tid),
        scopes=tuple(s for s in decoded if isinstance(s, str)) if isinstance(decoded, list) else (),
        revoked=_bool(revoked),
        expired=_bool(expired),
        stale=_bool(stale),
        user_pk=_field(get_user_model(), "pk").to_python(user_pk),
        user_active=_bool(active),
        user_superuser=_bool(superuser),
    )
