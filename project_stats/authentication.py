"""DRF authentication with API tokens: ``Authorization: Bearer <token>``.

Put :class:`BearerTokenAuthentication` first in a view's
``authentication_classes`` (before DRF's ``SessionAuthentication``): DRF takes
the ``WWW-Authenticate`` header of the first class, and without one it answers
unauthenticated requests with 403 instead of 401.

Error messages never contain the presented token, and nothing here logs it.
Django's error reports (the mails to ``ADMINS``, and the debug page even with
``DEBUG`` on) hide every local variable of the authentication code on
requests that carry a bearer token.

Failed attempts can be throttled per client address
(:class:`~project_stats.throttling.FailedAuthenticationThrottle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils import timezone
from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from . import tokens
from .access import TokenCredential, TokenRow, TokenUser
from .models import ApiToken
from .throttling import FailedAuthenticationThrottle

__all__ = ["BearerTokenAuthentication", "PendingToken", "TokenSafeExceptionReporterFilter"]


@dataclass(frozen=True, repr=False)
class PendingToken:
    """A bearer token read from the header, not yet checked against the database."""

    plaintext: str
    request: Request

    @property
    def digest(self) -> str | None:
        """What the database stores for this token; None if it cannot be one of ours."""
        return tokens.digest(self.plaintext) if tokens.is_well_formed(self.plaintext) else None

    def record_failure(self) -> None:
        """Count a failed attempt; ``Throttled`` (429) once the address failed too often."""
        FailedAuthenticationThrottle().record_failure(self.request)


class TokenSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Hides the variables marked sensitive even when ``DEBUG`` is on.

    Django's filter stands down in debug mode; but debug pages get pasted
    into bug reports and chats, and a token there is a live credential.
    """

    def is_active(self, request: HttpRequest | None) -> bool:
        return True


class BearerTokenAuthentication(BaseAuthentication):
    """Authenticates ``Authorization: Bearer <token>``; ``request.auth`` is the ``ApiToken``.

    Other schemes (``Basic``, ``Token``...) are left to the next class. A
    bearer header that fails for any reason is a 401, never a fall-through
    to another class.
    """

    keyword = "bearer"
    realm = "api"

    @sensitive_variables()  # everything below too: the token passes through many frames
    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        pending = self.identify(request)
        if pending is None:
            return None
        try:
            return self.authenticate_credentials(pending.plaintext)
        except AuthenticationFailed:
            pending.record_failure()
            raise

    @sensitive_variables()
    def identify(self, request: Request) -> PendingToken | None:
        """The bearer token of the request, checked for shape only: no database.

        None when the request has no bearer header (another class's turn).
        A malformed header raises ``AuthenticationFailed`` (counted as a
        failure); too many recent failures from the address raise
        ``Throttled``. The token itself is checked by :meth:`authenticate`
        or, in the stats views, by :meth:`accept` with the access statement's row.
        """
        header = request.META.get("HTTP_AUTHORIZATION")
        if isinstance(header, bytes):
            # WSGI hands headers over as latin-1 strings; be lenient with servers that don't.
            header = header.decode("latin-1")
        if not isinstance(header, str):
            return None
        parts = header.split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        # Error reports of this request hide the token, in debug mode too.
        request._request.exception_reporter_filter = (  # type: ignore[attr-defined]
            TokenSafeExceptionReporterFilter()
        )
        try:
            if len(parts) == 1:
                raise AuthenticationFailed("Invalid token header. No credentials provided.")
            if len(parts) > 2:
                raise AuthenticationFailed(
                    "Invalid token header. Token string should not contain spaces."
                )
        except AuthenticationFailed:
            # 429 instead of 401 once the address has failed too often; a
            # valid token is never refused, so nobody can lock others out.
            FailedAuthenticationThrottle().record_failure(request)
            raise
        return PendingToken(parts[1], request)

    @sensitive_variables()
    def authenticate_credentials(self, plaintext: str) -> tuple[Any, ApiToken]:
        token = ApiToken.objects.find(plaintext)
        if token is None or token.is_revoked:
            raise AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.is_expired(now=now):
            raise AuthenticationFailed("Token has expired.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        token.record_use(now=now)
        return token.user, token

    def accept(
        self, pending: PendingToken, row: TokenRow | None, *, now: datetime
    ) -> tuple[TokenUser, TokenCredential]:
        """``(user, auth)`` for the token the access statement read as ``row``.

        The same checks and messages as :meth:`authenticate_credentials`; the
        user is a :class:`~project_stats.access.TokenUser` (its id and flags,
        loaded in full only when something asks for more).
        """
        try:
            if row is None or row.revoked:
                raise AuthenticationFailed("Invalid token.")
            if row.expired:
                raise AuthenticationFailed("Token has expired.")
            if not row.user_active:
                raise AuthenticationFailed("User inactive or deleted.")
        except AuthenticationFailed:
            pending.record_failure()
            raise
        if row.stale:
            ApiToken.objects.filter(pk=row.pk).record_use(now=now)
        user = TokenUser(
            get_user_model(), row.user_pk, is_active=True, is_superuser=row.user_superuser
        )
        return user, TokenCredential(pk=row.pk, scopes=row.scopes, user_id=row.user_pk)

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{self.realm}"'
