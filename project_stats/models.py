"""Organizations, their projects and members, the stored event counts, API tokens."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, router, transaction
from django.utils import timezone

from . import tokens
from .constants import MAX_ENVIRONMENT_LENGTH, SCOPES, Stat

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

# An API path segment of digits only is read as an id, so such a slug could never
# be reached by its slug.
DIGITS_ONLY_SLUG = r"\A[0-9]+\Z"
validate_not_digits_only = RegexValidator(
    DIGITS_ONLY_SLUG,
    inverse_match=True,
    message="A slug of digits only reads as an id: add a letter or a hyphen.",
    code="digits_only",
)


class Organization(models.Model):
    slug = models.SlugField(max_length=50, unique=True, validators=[validate_not_digits_only])
    name = models.CharField(max_length=64)
    date_added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Project(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="projects"
    )
    slug = models.SlugField(max_length=50, validators=[validate_not_digits_only])
    name = models.CharField(max_length=200)
    date_added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__slug", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"], name="project_stats_project_org_slug_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save; a changed slug leaves a redirect from the old one behind.

        A project moved to another organization loses its redirects: they
        answered URLs of the old organization, where it no longer is.
        """
        using = kwargs.get("using") or router.db_for_write(Project, instance=self)
        kwargs["using"] = using
        with transaction.atomic(using=using):
            previous = None
            if self.pk is not None:
                # Under a row lock: a concurrent save of this project waits
                # here, then reads the slug this one left, so each old slug
                # gets its redirect. No ORDER BY, which would join (and lock)
                # the organization.
                previous = (
                    Project.objects.using(using)
                    .select_for_update()
                    .filter(pk=self.pk)
                    .order_by()
                    .values_list("organization_id", "slug")
                    .first()
                )
            super().save(*args, **kwargs)
            if previous == (self.organization_id, self.slug):
                return
            redirects = ProjectRedirect.objects.using(using)
            # A live project's slug always wins over a redirect from it.
            redirects.filter(organization_id=self.organization_id, redirect_slug=self.slug).delete()
            if previous is None:
                return
            if previous[0] != self.organization_id:
                redirects.filter(project=self).delete()
                return
            redirects.update_or_create(
                organization_id=self.organization_id,
                redirect_slug=previous[1],
                defaults={"project": self},
            )


class ProjectRedirectQuerySet(models.QuerySet["ProjectRedirect"]):
    def target(self, organization: Organization | int | str, redirect_slug: str) -> Project | None:
        """The project that used to be ``organization/redirect_slug``, if any.

        ``organization`` is an ``Organization``, its id (an int) or its slug.
        Only a project still in that organization: a redirect never leads
        into another organization.
        """
        if "\x00" in f"{organization}{redirect_slug}":
            return None  # no row can hold it, and PostgreSQL refuses to compare it
        if isinstance(organization, Organization):
            organization = organization.pk
        by = "organization_id" if isinstance(organization, int) else "organization__slug"
        redirect = (
            self.filter(
                **{by: organization},
                redirect_slug=redirect_slug,
                project__organization_id=models.F("organization_id"),
            )
            .select_related("project")
            .first()
        )
        return redirect.project if redirect is not None else None


class ProjectRedirect(models.Model):
    """An old slug of a renamed project, so old URLs keep working."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    redirect_slug = models.SlugField(max_length=50)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="redirects")
    date_added = models.DateTimeField(auto_now_add=True)

    objects = ProjectRedirectQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "redirect_slug"],
                name="project_stats_redirect_org_slug_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"{self.redirect_slug} -> {self.project_id}"


class OrganizationMember(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Admin"
        OWNER = "owner", "Owner"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="project_stats_memberships",
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    date_added = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="project_stats_member_org_user_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.organization_id} ({self.role})"


class EventCount(models.Model):
    """One bucket of one series: written and read only through ``project_stats.tsdb``."""

    # No index of its own: the unique constraint's index starts with it.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    stat = models.PositiveSmallIntegerField(choices=Stat.choices)
    # "" is the all-environments total.
    environment = models.CharField(max_length=MAX_ENVIRONMENT_LENGTH, blank=True, default="")
    # Bucket width in seconds.
    rollup = models.PositiveIntegerField()
    # Bucket start, UTC, aligned to the rollup.
    timestamp = models.DateTimeField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Column order serves the range read: equality columns, then the range.
            models.UniqueConstraint(
                fields=["project", "stat", "rollup", "environment", "timestamp"],
                name="project_stats_eventcount_bucket_uniq",
            )
        ]
        indexes = [
            # Pruning deletes by rollup and age across all projects.
            models.Index(fields=["rollup", "timestamp"], name="project_stats_ec_rollup_ts"),
            # Whether an organization recorded an environment: one probe per
            # project. Partial: the "" totals (most rows) are not in it, so
            # writing them costs nothing more.
            models.Index(
                fields=["project", "environment"],
                name="project_stats_ec_project_env",
                condition=~models.Q(environment=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} {self.get_stat_display()} {self.rollup}s {self.timestamp}"


class AppliedBatch(models.Model):
    """A batch of buffered increments the database already holds (see ``tsdb.buffer``).

    Its id is inserted in the same transaction as the batch's counts, so a
    flusher that retries a batch finds it here and adds nothing twice.
    """

    batch_id = models.CharField(max_length=64, primary_key=True)
    applied_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.batch_id


DEFAULT_TOKEN_SCOPES: tuple[str, ...] = ("project:read",)
# last_used is a hint for humans, not an audit log: one write a minute at most.
LAST_USED_INTERVAL = timedelta(minutes=1)
MAX_TOKEN_NAME_LENGTH = 100


def normalize_scopes(scopes: Iterable[str]) -> list[str]:
    """Known scopes, deduplicated, in ``SCOPES`` order; ``ValueError`` otherwise."""
    if isinstance(scopes, str):
        raise ValueError("scopes must be a list of scope names, not one string")
    try:
        given = list(scopes)
    except TypeError:
        raise ValueError("scopes must be a list of scope names") from None
    unknown = [s for s in given if not isinstance(s, str) or s not in SCOPES]
    if unknown:
        raise ValueError(
            f"Unknown scope(s): {', '.join(map(repr, unknown))}; choose from {', '.join(SCOPES)}."
        )
    if not given:
        raise ValueError(f"At least one scope is required; choose from {', '.join(SCOPES)}.")
    return [s for s in SCOPES if s in given]


def validate_scopes(value: object) -> None:
    """Field validator for ``ApiToken.scopes``."""
    try:
        normalize_scopes(value)  # type: ignore[arg-type]
    except ValueError as error:
        raise ValidationError(str(error), code="invalid_scopes") from None


def _aware_now(now: datetime | None) -> datetime:
    if now is None:
        return timezone.now()
    if timezone.is_naive(now):
        raise ValueError("naive datetime: give an aware (UTC) datetime")
    return now


def check_token_owner(user: AbstractBaseUser, *, issued_by: AbstractBaseUser | None = None) -> None:
    """``ValueError`` unless ``issued_by`` may issue a token acting as ``user``.

    The user must be saved and active. ``issued_by`` is who asks (a user in
    the admin) or ``None`` for the site itself (code, a management command):
    a user who is not a superuser may issue tokens only for themself, since
    a token acts with all of its owner's rights.
    """
    if user.pk is None:
        raise ValueError("user must be saved")
    if not user.is_active:
        raise ValueError(f"User {user.get_username()!r} is inactive.")
    if (
        issued_by is not None
        and not getattr(issued_by, "is_superuser", False)
        and issued_by.pk != user.pk
    ):
        raise ValueError("Only superusers may issue tokens for other users.")


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def issue(
        self,
        user: AbstractBaseUser,
        *,
        name: str = "",
        scopes: Iterable[str] = DEFAULT_TOKEN_SCOPES,
        expires_at: datetime | None = None,
        now: datetime | None = None,
        issued_by: AbstractBaseUser | None = None,
    ) -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns ``(token, plaintext)``.

        The plaintext exists only in the return value: keep it or lose it.
        ``ValueError`` (and nothing created) for an unsaved or inactive user,
        an ``issued_by`` who may not issue for ``user`` (see
        :func:`check_token_owner`), unknown or no scopes, a name over 100
        characters (or with NUL), or an ``expires_at`` that is naive or not
        in the future.
        """
        check_token_owner(user, issued_by=issued_by)
        if not isinstance(name, str) or len(name) > MAX_TOKEN_NAME_LENGTH or "\x00" in name:
            raise ValueError(
                f"name must be a string of at most {MAX_TOKEN_NAME_LENGTH} characters, without NUL"
            )
        clean_scopes = normalize_scopes(scopes)
        if expires_at is not None:
            if timezone.is_naive(expires_at):
                raise ValueError("expires_at must be an aware datetime")
            if expires_at <= _aware_now(now):
                raise ValueError("expires_at must be in the future")
        token = self.model(user_id=user.pk, name=name, scopes=clean_scopes, expires_at=expires_at)
        plaintext = token.assign_new_secret()
        self._for_write = True  # as QuerySet.create does: the router's write database
        token.save(force_insert=True, using=self.db)
        return token, plaintext

    def active(self, *, now: datetime | None = None) -> ApiTokenQuerySet:
        """Tokens neither revoked nor expired at ``now``."""
        return self.filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=_aware_now(now)),
            revoked_at__isnull=True,
        )

    def find(self, plaintext: str) -> ApiToken | None:
        """The token (revoked, expired or not) whose secret is ``plaintext``, with its user."""
        if not tokens.is_well_formed(plaintext):
            return None
        # Found by digest: a wrong secret matches no row whether or not its
        # prefix exists, so both cost the same and prefixes cannot be probed.
        for candidate in self.select_related("user").filter(digest=tokens.digest(plaintext)):
            if tokens.verify(plaintext, candidate.digest):
                return candidate
        return None

    def record_use(self, *, now: datetime | None = None) -> int:
        """Set ``last_used`` to ``now`` where it is unset or over a minute old; how many rows.

        Conditional in the database, so concurrent requests write at most once
        a minute too.
        """
        now = _aware_now(now)
        stale = models.Q(last_used__isnull=True) | models.Q(last_used__lt=now - LAST_USED_INTERVAL)
        return self.filter(stale).update(last_used=now)

    def revoke(self, *, now: datetime | None = None) -> int:
        """Revoke the tokens not yet revoked; returns how many."""
        return self.filter(revoked_at__isnull=True).update(revoked_at=_aware_now(now))


class ApiToken(models.Model):
    """A bearer credential for the API, acting as ``user`` within ``scopes``.

    Only a SHA-256 digest of the secret is stored, with a short lookup
    prefix. Revoking sets ``revoked_at`` and keeps the row, so the admin
    still shows who held the token and when it was last used.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_stats_tokens"
    )
    name = models.CharField(max_length=MAX_TOKEN_NAME_LENGTH, blank=True, default="")
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, validators=[validate_scopes])
    expires_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = "API token"
        verbose_name_plural = "API tokens"

    def __str__(self) -> str:
        label = f"{self.prefix}\u2026"
        return f"{label} {self.name}" if self.name else label

    def assign_new_secret(self) -> str:
        """Give this (unsaved) token a fresh secret; returns the plaintext, never stored."""
        plaintext = tokens.generate()
        self.prefix = tokens.lookup_prefix(plaintext)
        self.digest = tokens.digest(plaintext)
        return plaintext

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, *, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= _aware_now(now)

    def record_use(self, *, now: datetime | None = None) -> bool:
        """Set ``last_used`` unless it was set less than a minute ago.

        The UPDATE is conditional, so concurrent requests write at most once
        a minute too. Returns whether this call wrote.
        """
        now = _aware_now(now)
        if self.last_used is not None and self.last_used >= now - LAST_USED_INTERVAL:
            return False
        written = type(self).objects.filter(pk=self.pk).record_use(now=now)
        if written:
            self.last_used = now
        return bool(written)
