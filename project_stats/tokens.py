"""API token secrets: generation, digests and verification.

Pure functions over strings: no models, no DRF. A token looks like
``psk_`` followed by 43 base62 characters (about 256 random bits). The
marker lets secret scanners recognise a leaked token; base62 keeps the whole
token selectable with a double click. Only :func:`digest` of a token is
stored, next to its :func:`lookup_prefix`, which finds the row without
revealing enough of the secret to matter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

__all__ = [
    "LOOKUP_PREFIX_LENGTH",
    "TOKEN_LENGTH",
    "TOKEN_MARKER",
    "digest",
    "generate",
    "is_well_formed",
    "lookup_prefix",
    "verify",
]

TOKEN_MARKER = "psk_"  # noqa: S105 - a public marker, not a secret
_ALPHABET = string.ascii_letters + string.digits
# 43 base62 characters carry 43 * log2(62) ~ 256 bits.
_SECRET_LENGTH = 43
TOKEN_LENGTH = len(TOKEN_MARKER) + _SECRET_LENGTH
# The marker plus 8 random characters (~48 bits): enough to find the row,
# leaving ~208 secret bits that only the digest comparison checks.
LOOKUP_PREFIX_LENGTH = len(TOKEN_MARKER) + 8
_TOKEN_RE = re.compile(re.escape(TOKEN_MARKER) + f"[A-Za-z0-9]{{{_SECRET_LENGTH}}}")


def generate() -> str:
    """A new random plaintext token."""
    return TOKEN_MARKER + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LENGTH))


def is_well_formed(token: object) -> bool:
    """Whether ``token`` has the shape :func:`generate` produces.

    Checked before any database work, so junk (binary, huge, wrong marker)
    costs nothing.
    """
    return (
        isinstance(token, str)
        and len(token) == TOKEN_LENGTH
        and _TOKEN_RE.fullmatch(token) is not None
    )


def lookup_prefix(token: str) -> str:
    """The stored, indexed, non-secret part of a token used to find its row."""
    return token[:LOOKUP_PREFIX_LENGTH]


def digest(token: str) -> str:
    """Hex SHA-256 of a token: what the database keeps instead of the token.

    A fast unsalted hash is enough here: the input is 256 random bits, not a
    password, so there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def verify(token: str, expected_digest: str) -> bool:
    """Whether ``token`` hashes to ``expected_digest``, in constant time."""
    return hmac.compare_digest(digest(token).encode(), expected_digest.encode())
