"""Issue an API token for a user and print it once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from project_stats.constants import SCOPES
from project_stats.models import DEFAULT_TOKEN_SCOPES, ApiToken


class Command(BaseCommand):
    # Whoever runs manage.py acts as the site itself (as with createsuperuser):
    # any active user may be given a token here. In the admin, only
    # superusers issue tokens for other users.
    help = (
        "Issue an API token for USERNAME, who must be active; the token acts with all of "
        "USERNAME's rights within its scopes. Running this command is acting as the site: "
        "it may issue for any active user, superusers included (in the admin, a staff user "
        "who is not a superuser may issue tokens only for themself). The token is printed "
        "once, as the last line of the output; only its digest is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            metavar="SCOPE",
            help=f"repeat for several; one of {', '.join(SCOPES)} "
            f"(default: {', '.join(DEFAULT_TOKEN_SCOPES)})",
        )
        parser.add_argument(
            "--expires-in-days", type=int, metavar="N", help="default: never expires"
        )
        parser.add_argument("--name", default="", help="a label shown in the admin")

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        days: int | None = options["expires_in_days"]
        now = timezone.now()
        expires_at = None
        if days is not None:
            if days <= 0:
                raise CommandError("--expires-in-days must be a positive number of days.")
            try:
                expires_at = now + timedelta(days=days)
            except OverflowError:
                raise CommandError("--expires-in-days is too large.") from None
        user_model = get_user_model()
        try:
            # PostgreSQL refuses NUL in text with an error, not an empty result.
            if "\x00" in username:
                raise user_model.DoesNotExist
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        try:
            token, plaintext = ApiToken.objects.issue(
                user,
                name=options["name"],
                scopes=options["scopes"] or DEFAULT_TOKEN_SCOPES,
                expires_at=expires_at,
                now=now,
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        expiry = token.expires_at.isoformat() if token.expires_at else "never"
        self.stdout.write(
            f"Issued token {token.prefix}\u2026 for {user.get_username()} "
            f"(scopes: {' '.join(token.scopes)}; expires: {expiry})."
        )
        self.stdout.write("Copy it now: it cannot be shown again.")
        self.stdout.write(plaintext)
