"""Stat names the API speaks and the stable integer codes stored for them."""

from __future__ import annotations

from django.db import models


class Stat(models.IntegerChoices):
    """Codes are stored in the database: never renumber, only append."""

    RECEIVED = 0, "received"
    REJECTED = 1, "rejected"
    BLACKLISTED = 2, "blacklisted"
    GENERATED = 3, "generated"
    IP_ADDRESS = 10, "ip-address"
    RELEASE_VERSION = 11, "release-version"
    ERROR_MESSAGE = 12, "error-message"
    BROWSER_EXTENSIONS = 13, "browser-extensions"
    LEGACY_BROWSERS = 14, "legacy-browsers"
    LOCALHOST = 15, "localhost"
    WEB_CRAWLERS = 16, "web-crawlers"
    INVALID_CSP = 17, "invalid-csp"
    CORS = 18, "cors"
    DISCARDED_HASH = 19, "discarded-hash"
    FILTERED_TRANSACTION = 20, "filtered-transaction"


STAT_CODES: dict[str, int] = {str(s.label): int(s.value) for s in Stat}
STAT_NAMES: dict[int, str] = {code: name for name, code in STAT_CODES.items()}
# The inbound filters' own stats: ``blacklisted`` counts what all of them dropped.
FILTER_STATS: tuple[str, ...] = tuple(
    str(s.label) for s in Stat if s.value >= Stat.IP_ADDRESS.value
)
DEFAULT_STAT = "received"
# Sentry keeps per-environment counts for this stat only.
ENVIRONMENT_STATS = frozenset({"generated"})
# The longest environment name stored (Sentry's limit).
MAX_ENVIRONMENT_LENGTH = 64
# Primary keys are 64-bit (BigAutoField): the largest id, and its number of
# digits, the most an id parameter may have (Python's int() refuses more than
# 4,300 digits, and no longer number fits the column).
MAX_ID = 2**63 - 1
MAX_ID_DIGITS = len(str(MAX_ID))
# The longest time parameter (since/until, start/end): an ISO 8601 time with
# microseconds and an offset to the microsecond has 42 characters, epoch
# seconds to the microsecond 20.
MAX_TIME_LENGTH = 64


def stat_code(stat: str | int) -> int:
    """The stored code of a stat given by API name or code; ``ValueError`` if unknown."""
    if isinstance(stat, bool):
        raise ValueError(f"Invalid stat: {stat!r}")
    if isinstance(stat, int):
        if stat in STAT_NAMES:
            return stat
        raise ValueError(f"Invalid stat: {stat}")
    try:
        return STAT_CODES[stat]
    except (KeyError, TypeError):
        raise ValueError(f"Invalid stat: {stat}") from None


# Token scopes, as Sentry names them.
SCOPES: tuple[str, ...] = ("org:read", "project:read", "project:write", "project:admin")
PROJECT_READ_SCOPES = frozenset({"project:read", "project:write", "project:admin"})
ORG_READ_SCOPES = frozenset({"org:read"}) | PROJECT_READ_SCOPES
