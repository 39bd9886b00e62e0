"""System checks for ``PROJECT_STATS`` (ids ``project_stats.E001``...)."""

from __future__ import annotations

import math
import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connections, router
from django.db.models import Model, QuerySet
from django.utils.module_loading import import_string
from rest_framework.authentication import BaseAuthentication
from rest_framework.settings import api_settings

from .conf import BUFFER_DEFAULTS, DEFAULTS, project_stats_settings
from .throttling import AUTH_THROTTLE_SCOPE, THROTTLE_SCOPE
from .tsdb.dialects import SUPPORTED_VENDORS

_HINT_ROLLUPS = 'e.g. "ROLLUPS": ((10, 360), (3600, 168), (86400, 90))'
# What DRF's SimpleRateThrottle.parse_rate understands: it reads the unit's first letter.
_THROTTLE_RATE_RE = re.compile(r"[0-9]+/[smhd][a-z]*")


def _rollups_errors(value: Any) -> list[CheckMessage]:
    try:
        pairs = [(r, n) for r, n in value]
    except (TypeError, ValueError):
        return [
            Error(
                "PROJECT_STATS['ROLLUPS'] must be a sequence of (seconds, samples) pairs.",
                hint=_HINT_ROLLUPS,
                id="project_stats.E001",
            )
        ]
    errors: list[CheckMessage] = []
    if not pairs:
        errors.append(
            Error("PROJECT_STATS['ROLLUPS'] is empty.", hint=_HINT_ROLLUPS, id="project_stats.E001")
        )
    for rollup, samples in pairs:
        for what, number in (("seconds", rollup), ("samples", samples)):
            if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
                errors.append(
                    Error(
                        f"PROJECT_STATS['ROLLUPS'] {what} must be positive integers, "
                        f"got {number!r}.",
                        hint=_HINT_ROLLUPS,
                        id="project_stats.E002",
                    )
                )
    if errors:
        return errors
    for (finer, _), (coarser, _) in zip(pairs, pairs[1:], strict=False):
        if coarser <= finer:
            errors.append(
                Error(
                    "PROJECT_STATS['ROLLUPS'] must be strictly increasing, "
                    f"but {coarser} follows {finer}.",
                    hint="List the finest rollup first.",
                    id="project_stats.E003",
                )
            )
        elif coarser % finer:
            errors.append(
                Error(
                    f"PROJECT_STATS['ROLLUPS']: {finer} does not divide {coarser}.",
                    hint="Each rollup must divide the next so buckets nest.",
                    id="project_stats.E004",
                )
            )
    return errors


def _full_scope_errors(value: Any) -> list[CheckMessage]:
    name = "PROJECT_STATS['FULL_SCOPE_AUTHENTICATION_CLASSES']"
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return [
            Error(
                f"{name} must be a list of dotted paths to authentication classes, got {value!r}.",
                hint=f"The default is {list(DEFAULTS['FULL_SCOPE_AUTHENTICATION_CLASSES'])!r}.",
                id="project_stats.E021",
            )
        ]
    errors: list[CheckMessage] = []
    for path in value:
        try:
            cls = import_string(path)
        except ImportError as error:
            problem = f"cannot be imported ({error})"
        else:
            if isinstance(cls, type) and issubclass(cls, BaseAuthentication):
                continue
            problem = "is not a DRF authentication class (a BaseAuthentication subclass)"
        errors.append(Error(f"{name}: {path!r} {problem}.", id="project_stats.E022"))
    return errors


def _positive_int_errors(name: str, check_id: str) -> list[CheckMessage]:
    value = project_stats_settings.raw(name)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return []
    return [
        Error(
            f"PROJECT_STATS['{name}'] must be a positive integer, got {value!r}.",
            hint=f"The default is {DEFAULTS[name]}.",
            id=check_id,
        )
    ]


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors = _rollups_errors(project_stats_settings.raw("ROLLUPS"))
    errors += _positive_int_errors("MAX_POINTS", "project_stats.E005")
    errors += _positive_int_errors("MAX_TOTAL_POINTS", "project_stats.E020")
    errors.extend(
        _full_scope_errors(project_stats_settings.raw("FULL_SCOPE_AUTHENTICATION_CLASSES"))
    )
    timestamp_format = project_stats_settings.raw("TIMESTAMP_FORMAT")
    if timestamp_format not in ("int", "float"):
        errors.append(
            Error(
                "PROJECT_STATS['TIMESTAMP_FORMAT'] must be 'int' or 'float', "
                f"got {timestamp_format!r}.",
                id="project_stats.E006",
            )
        )
    if not isinstance(project_stats_settings.raw("PREPARED_STATEMENTS"), bool):
        errors.append(
            Error(
                "PROJECT_STATS['PREPARED_STATEMENTS'] must be True or False, "
                f"got {project_stats_settings.raw('PREPARED_STATEMENTS')!r}.",
                id="project_stats.E024",
            )
        )
    return errors


@register()
def check_database(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .models import EventCount

    errors: list[CheckMessage] = []
    write_alias = router.db_for_write(EventCount)
    vendor = connections[write_alias].vendor
    if vendor not in SUPPORTED_VENDORS:
        # An error, not a warning: every write raises there, so a site would
        # start and then fail on its first increment. Routing our tables
        # elsewhere is no way out: they refer to the user model.
        errors.append(
            Error(
                f"Database {write_alias!r} is {vendor}; project_stats writes counts on "
                "PostgreSQL, MariaDB 10.6+, MySQL 8.0.19+ or SQLite only.",
                hint="project_stats's tables refer to the user model, so they must live in "
                "the database that holds it: run the site on one of these databases.",
                id="project_stats.E008",
            )
        )
    for alias in sorted({write_alias, router.db_for_read(EventCount)}):
        connection = connections[alias]
        zone = connection.settings_dict.get("TIME_ZONE")
        if connection.vendor == "sqlite" and settings.USE_TZ and zone not in (None, "UTC"):
            # SQLite stores datetimes as text in that zone's wall-clock time,
            # while our SQL reads and buckets that text as UTC; and in a zone
            # with daylight saving time two distinct UTC hours share one text
            # in autumn, so two buckets would collide in the unique constraint.
            errors.append(
                Error(
                    f"DATABASES[{alias!r}]['TIME_ZONE'] is {zone!r}; project_stats needs "
                    "SQLite to store times in UTC.",
                    hint="Remove TIME_ZONE from this database's settings (or set it to 'UTC').",
                    id="project_stats.E009",
                )
            )
        if (
            connection.vendor == "postgresql"
            and connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
            and project_stats_settings.raw("PREPARED_STATEMENTS") is True
        ):
            # Django's advice for PgBouncer in transaction mode: such a pooler
            # hands the connection to another client after each transaction,
            # and a prepared statement does not follow.
            errors.append(
                Warning(
                    f"DATABASES[{alias!r}] sets DISABLE_SERVER_SIDE_CURSORS, as behind a "
                    "transaction-mode pooler, but project_stats prepares its statements.",
                    hint="Set PROJECT_STATS['PREPARED_STATEMENTS'] = False behind PgBouncer "
                    "in transaction mode (PgBouncer 1.21+ with max_prepared_statements > 0 "
                    "keeps them: silence this warning then).",
                    id="project_stats.W003",
                )
            )
    return errors


# Oldest releases whose SQL we speak: MariaDB 10.6 (JSON_TABLE, SKIP LOCKED)
# and MySQL 8.0.19 (the row alias of INSERT ... ON DUPLICATE KEY UPDATE).
MIN_MARIADB = (10, 6)
MIN_MYSQL = (8, 0, 19)


@register(Tags.database)
def check_mysql(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """MariaDB/MySQL version and ``sql_mode`` (a database check: it connects).

    Runs with ``manage.py check --database <alias>`` and before ``migrate``.
    """
    from .models import EventCount

    errors: list[CheckMessage] = []
    aliases = {router.db_for_write(EventCount), router.db_for_read(EventCount)}
    for alias in sorted(aliases & set(databases or ())):
        connection = connections[alias]
        if connection.vendor != "mysql":
            continue
        try:
            mariadb = bool(connection.mysql_is_mariadb)  # type: ignore[attr-defined]
            version = tuple(connection.mysql_version)  # type: ignore[attr-defined]
            sql_mode = set(connection.sql_mode)  # type: ignore[attr-defined]
        except DatabaseError:
            continue  # unreachable: migrate will say so
        shown = ".".join(str(part) for part in version)
        if mariadb and version < MIN_MARIADB:
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] is MariaDB {shown}; project_stats needs MariaDB 10.6+.",
                    hint="Upgrade MariaDB to 10.6 or later (10.11 LTS is tested).",
                    id="project_stats.E040",
                )
            )
        elif not mariadb and version < MIN_MYSQL:
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] is MySQL {shown}; project_stats needs MySQL 8.0.19+.",
                    hint="Upgrade MySQL to 8.0.19 or later, or use MariaDB 10.6+.",
                    id="project_stats.E041",
                )
            )
        elif not mariadb:
            errors.append(
                Warning(
                    f"DATABASES[{alias!r}] is MySQL {shown}: project_stats is tested on "
                    "MariaDB, PostgreSQL and SQLite, not on MySQL.",
                    hint="Run the test suite against this server (TEST_DATABASE_URL), "
                    "then silence project_stats.W010.",
                    id="project_stats.W010",
                )
            )
        if not sql_mode & {"STRICT_TRANS_TABLES", "STRICT_ALL_TABLES"}:
            # Without a strict mode an out-of-range or too long value is
            # stored truncated, with a warning nobody reads.
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] does not run in a strict sql_mode; values "
                    "project_stats writes could be truncated silently.",
                    hint='Add "init_command": "SET sql_mode=\'STRICT_TRANS_TABLES\'" to '
                    f"DATABASES[{alias!r}]['OPTIONS'] (or set it on the server).",
                    id="project_stats.E042",
                )
            )
    return errors


@register()
def check_throttle_rate(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    rates = api_settings.DEFAULT_THROTTLE_RATES or {}
    errors: list[CheckMessage] = []
    for scope in (THROTTLE_SCOPE, AUTH_THROTTLE_SCOPE):
        rate = rates.get(scope) if isinstance(rates, dict) else None
        if rate is None or (isinstance(rate, str) and _THROTTLE_RATE_RE.fullmatch(rate)):
            continue
        errors.append(
            Error(
                f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['{scope}'] must be a rate "
                f"such as '120/min', got {rate!r}.",
                hint="A number, a slash and a unit: s, m, h or d (sec, min, hour, day).",
                id="project_stats.E007",
            )
        )
    return errors


# How many rows one W002 warning names; the rest are counted.
_LISTED_ROWS = 20


@register(Tags.database)
def check_digits_only_slugs(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Rows whose slug is only digits: API paths read such a segment as an id.

    A data check, so tagged ``database``: it runs under ``check --database ALIAS``,
    ``migrate`` and the test runner, never on a plain ``check`` or ``runserver``.
    Before the tables exist (``migrate`` runs checks first) it has nothing to say.
    """
    from .models import DIGITS_ONLY_SLUG, Organization, Project

    sources: list[tuple[type[Model], QuerySet[Any]]] = [
        (Organization, Organization._default_manager.all()),
        (Project, Project._default_manager.select_related("organization")),
    ]
    warnings: list[CheckMessage] = []
    for alias in databases or ():
        for model, queryset in sources:
            if not router.allow_migrate_model(alias, model):
                continue
            try:
                with connections[alias].cursor() as cursor:
                    tables = connections[alias].introspection.table_names(cursor)
                if model._meta.db_table not in tables:
                    continue
                rows = queryset.using(alias).filter(slug__regex=DIGITS_ONLY_SLUG)
                total = rows.count()
                listed = [f"{row} (id {row.pk})" for row in rows.order_by("pk")[:_LISTED_ROWS]]
            except DatabaseError:
                continue  # unreachable: other checks and commands say so
            if not total:
                continue
            more = f" and {total - len(listed)} more" if total > len(listed) else ""
            name = model._meta.verbose_name if total == 1 else model._meta.verbose_name_plural
            warnings.append(
                Warning(
                    f"{total} {name} in database {alias!r} with a slug of digits only, "
                    f"which API paths read as an id: {', '.join(listed)}{more}.",
                    hint="They are reachable by id only: give each a slug with a letter "
                    "or a hyphen, as model validation (and so the admin) requires.",
                    obj=model,
                    id="project_stats.W002",
                )
            )
    return warnings


@register()
def check_time_zone_support(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if getattr(settings, "USE_TZ", False):
        return []
    return [
        Error(
            "project_stats needs USE_TZ = True: buckets, token expiry and the API's "
            "epoch-second timestamps are computed from aware UTC datetimes, and with "
            "USE_TZ = False every authenticated API request fails.",
            hint="Set USE_TZ = True (Django's default). Times are still shown in the "
            "site's TIME_ZONE wherever Django localizes them.",
            id="project_stats.E010",
        )
    ]


_BUFFER_HINT = 'e.g. "BUFFER": {"URL": "redis://127.0.0.1:6379/0"}, or None for no buffer'
_SENTINEL_SCHEME = "redis+sentinel://"
_URL_SCHEMES = ("redis://", "rediss://", "unix://", _SENTINEL_SCHEME)
_SENTINEL_HINT = (
    "e.g. redis+sentinel://:password@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster/0 "
    "(the password is the primary's; ?sentinel_password=... for the sentinels')"
)


def _sentinel_errors(url: str, cluster: Any) -> list[CheckMessage]:
    from .tsdb.buffer import sentinel_address

    try:
        sentinel_address(url)
    except ValueError as error:
        problem = f"is not a valid Sentinel URL: {error}"
    else:
        if cluster is not True:
            return []
        problem = "names sentinels, which serve one primary, not a Redis Cluster (CLUSTER: True)"
    return [
        Error(
            f"PROJECT_STATS['BUFFER']['URL'] {problem}.",
            hint=_SENTINEL_HINT,
            id="project_stats.E028",
        )
    ]


# The buffer's durations in seconds: (least, most, why these bounds). Each
# value is used as a finite number (a Redis expiry in milliseconds, a socket
# timeout, a cutoff date), so infinities and NaN fail at run time.
_DURATIONS: dict[str, tuple[float, float, str]] = {
    # 0 is excluded (see _duration_errors). Python's sockets overflow past
    # about 9.2e9 s; no request should wait on Redis for more than an hour.
    "SOCKET_TIMEOUT": (
        0,
        3600,
        "a request waits this long on Redis at worst",
    ),
    # The lease is set with PX in whole milliseconds (Redis refuses PX 0),
    # and it must outlive a flush's round trips (Redis, the database
    # transaction, Redis again): one that runs out mid-flush lets a second
    # flusher redo the work. A day at most: a flusher that dies holds its
    # shards until its lease runs out.
    "LEASE_SECONDS": (
        1,
        86400,
        "a flush must finish within its lease, and a dead flusher holds its shards this long",
    ),
    # Applied batch ids are how a batch Redis hands back again (an
    # acknowledgement that did not reach it, a restart from an older
    # snapshot) is known as counted: forgotten sooner than an hour, such a
    # batch could be added twice. A century at most keeps the cutoff a date.
    "KEEP_APPLIED_SECONDS": (
        3600,
        100 * 31_557_600,
        "applied batch ids must outlast any batch Redis can give back again",
    ),
    # A write waits this long for its replicas (WAIT_REPLICAS), within SOCKET_TIMEOUT.
    "WAIT_TIMEOUT": (
        0,
        3600,
        "a write waits this long for its replicas at worst",
    ),
}


def _duration_errors(name: str, value: Any) -> list[CheckMessage]:
    least, most, why = _DURATIONS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = f"a number of seconds, got {value!r}"
    elif not math.isfinite(value):
        problem = f"a finite number of seconds, got {value!r}"
    elif least == 0 and not 0 < value <= most:
        problem = f"more than 0 and at most {most} seconds, got {value!r} ({why})"
    elif least > 0 and not least <= value <= most:
        problem = f"from {least} to {most} seconds, got {value!r} ({why})"
    else:
        return []
    return [
        Error(
            f"PROJECT_STATS['BUFFER']['{name}'] must be {problem}.",
            hint=f"The default is {BUFFER_DEFAULTS[name]}.",
            id="project_stats.E018",
        )
    ]


def _wait_errors(config: dict[str, Any]) -> list[CheckMessage]:
    replicas, timeout, socket = (
        config["WAIT_REPLICAS"],
        config["WAIT_TIMEOUT"],
        config["SOCKET_TIMEOUT"],
    )
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        problem = f"WAIT_REPLICAS must be an integer, 0 or more, got {replicas!r}"
    elif (
        replicas
        and not _duration_errors("WAIT_TIMEOUT", timeout)
        and not _duration_errors("SOCKET_TIMEOUT", socket)
        and timeout >= socket
    ):
        problem = (
            f"WAIT_TIMEOUT ({timeout!r} s) must be less than SOCKET_TIMEOUT ({socket!r} s): "
            "the client would give up on WAIT's answer first"
        )
    else:
        return []
    return [
        Error(
            f"PROJECT_STATS['BUFFER']: {problem}.",
            hint="WAIT_REPLICAS: the replicas a write waits for (0: none), at most "
            "WAIT_TIMEOUT seconds; see docs/howto/redis.md#redis-sentinel.",
            id="project_stats.E029",
        )
    ]


@register()
def check_buffer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    value = project_stats_settings.raw("BUFFER")
    if value is None:
        return []
    if not isinstance(value, dict):
        return [
            Error(
                f"PROJECT_STATS['BUFFER'] must be None or a dict, got {type(value).__name__}.",
                hint=_BUFFER_HINT,
                id="project_stats.E011",
            )
        ]
    errors: list[CheckMessage] = []
    unknown = sorted(str(key) for key in value if key not in BUFFER_DEFAULTS)
    if unknown:
        errors.append(
            Error(
                f"PROJECT_STATS['BUFFER'] has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(BUFFER_DEFAULTS)}.",
                id="project_stats.E019",
            )
        )
    config = {**BUFFER_DEFAULTS, **value}
    url = config["URL"]
    if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
        errors.append(
            Error(
                "PROJECT_STATS['BUFFER']['URL'] must be a redis://, rediss://, unix:// "
                "or redis+sentinel:// URL.",
                hint=_BUFFER_HINT,
                id="project_stats.E012",
            )
        )
    elif url.startswith(_SENTINEL_SCHEME):
        errors += _sentinel_errors(url, config["CLUSTER"])
    try:
        import redis  # noqa: F401
    except ImportError:
        errors.append(
            Error(
                "PROJECT_STATS['BUFFER'] needs the Redis client, which is not installed.",
                hint="pip install 'django-project-stats[redis]'",
                id="project_stats.E013",
            )
        )
    for name in ("CLUSTER", "ACCEPT_EVICTION"):
        if not isinstance(config[name], bool):
            errors.append(
                Error(
                    f"PROJECT_STATS['BUFFER']['{name}'] must be True or False, "
                    f"got {config[name]!r}.",
                    id="project_stats.E014",
                )
            )
    prefix = config["PREFIX"]
    if not isinstance(prefix, str) or not 0 < len(prefix) <= 64 or set(prefix) & set("{}:"):
        errors.append(
            Error(
                "PROJECT_STATS['BUFFER']['PREFIX'] must be 1 to 64 characters "
                f"without braces or colons, got {prefix!r}.",
                hint="The key names wrap it in a hash tag: {PREFIX:shard}.",
                id="project_stats.E015",
            )
        )
    shards = config["SHARDS"]
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 16384:
        errors.append(
            Error(
                f"PROJECT_STATS['BUFFER']['SHARDS'] must be an integer from 1 to 16384, "
                f"got {shards!r}.",
                hint=f"The default is {BUFFER_DEFAULTS['SHARDS']}.",
                id="project_stats.E016",
            )
        )
    for name in ("ON_ERROR", "READ_ON_ERROR"):
        if config[name] not in ("raise", "database"):
            errors.append(
                Error(
                    f"PROJECT_STATS['BUFFER']['{name}'] must be 'raise' or 'database', "
                    f"got {config[name]!r}.",
                    id="project_stats.E017",
                )
            )
    for name in _DURATIONS:
        errors += _duration_errors(name, config[name])
    for name, meaning in (
        ("FLUSH_MAX_ROWS", "rows per flush transaction"),
        ("CLAIM_SHARDS", "shards a flusher claims at a time"),
    ):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(
                Error(
                    f"PROJECT_STATS['BUFFER']['{name}'] must be a positive integer "
                    f"({meaning}), got {value!r}.",
                    hint=f"The default is {BUFFER_DEFAULTS[name]}.",
                    id="project_stats.E023",
                )
            )
    errors += _wait_errors(config)
    chosen = config["REDIS_ONLY_ROLLUPS"]
    configured = [r for r, _ in project_stats_settings.ROLLUPS]
    if chosen is not None and (
        not isinstance(chosen, list | tuple)
        or any(isinstance(r, bool) or r not in configured for r in chosen)
    ):
        errors.append(
            Error(
                "PROJECT_STATS['BUFFER']['REDIS_ONLY_ROLLUPS'] must be None or a list of "
                f"configured rollups (seconds: {configured}), got {chosen!r}.",
                hint="None keeps the rollups of six hours' retention or less in Redis; "
                "() keeps every rollup in the database.",
                id="project_stats.E025",
            )
        )
    return errors


@register(deploy=True)
def check_buffer_redis(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The buffer's Redis: an evicting ``maxmemory-policy``, a user that may not run INFO.

    A deployment check (``check --deploy``): it asks Redis, so it stays off
    every other command. An unreachable Redis is a warning: the site may
    be checked where Redis is not reachable.
    """
    config = project_stats_settings.BUFFER
    if config is None or check_buffer():
        return []  # no buffer, or check_buffer says what is wrong with it
    from .tsdb import buffer, redis_config

    try:
        servers = redis_config.probe(config)
    except buffer.BufferUnavailable as error:
        return [
            Warning(
                f"Could not ask the buffer's Redis for its eviction policy and permissions: "
                f"{error}.",
                hint="Run check --deploy where PROJECT_STATS['BUFFER']['URL'] is reachable.",
                id="project_stats.W005",
            )
        ]
    kinds = {"error": Error, "warning": Warning}
    return [
        kinds[problem.level](problem.message, hint=problem.hint, id=problem.id)
        for problem in redis_config.problems(config, servers)
    ]
