"""Admin pages for organizations, projects, members, counts and API tokens.

A project's change page draws a chart of its counts, read through
``tsdb.get_range`` like the API; ``?stat=`` and ``?resolution=`` pick the
series and fall back to the defaults when they are not valid.
"""

from __future__ import annotations

import weakref
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from . import tokens, tsdb
from .charts import BarChart, bar_chart
from .conf import project_stats_settings
from .constants import DEFAULT_STAT, SCOPES, STAT_CODES
from .models import (
    DEFAULT_TOKEN_SCOPES,
    ApiToken,
    ApiTokenQuerySet,
    EventCount,
    Organization,
    OrganizationMember,
    Project,
    check_token_owner,
    normalize_scopes,
)
from .tsdb.rollups import epoch_to_datetime, format_resolution, parse_resolution

HOUR = 3600
DAY = 86400
DEFAULT_CHART_ROLLUP = HOUR
# Enough bars to read at the admin's width; more would be slivers.
MAX_CHART_BARS = 720


def chart_points(rollup: int, samples: int) -> int:
    """How many buckets the chart shows at ``rollup``.

    A day's worth up to hourly buckets (10s: the hour kept, 1h: 24 hours),
    the whole retention above (1d: 90 days); never more than is kept, than
    ``MAX_POINTS`` allows, or than fit as bars.
    """
    wanted = DAY // rollup if rollup <= HOUR else samples
    limit = project_stats_settings.MAX_POINTS
    return max(1, min(wanted, samples, limit, MAX_CHART_BARS))


def _chosen_rollup(value: str | None, rollups: dict[int, int]) -> int:
    default = DEFAULT_CHART_ROLLUP if DEFAULT_CHART_ROLLUP in rollups else next(iter(rollups))
    try:
        rollup = parse_resolution(value) if value else default
    except ValueError:
        return default
    return rollup if rollup in rollups else default


def chart_context(
    request: HttpRequest, project: Project, *, now: datetime | None = None
) -> dict[str, Any]:
    """What the change form's chart template needs, from the request's GET parameters."""
    rollups = dict(tsdb.get_rollups())
    stat = request.GET.get("stat")
    if stat not in STAT_CODES:
        stat = DEFAULT_STAT
    rollup = _chosen_rollup(request.GET.get("resolution"), rollups)
    points = chart_points(rollup, rollups[rollup])
    end = now or timezone.now()
    # Sentry's window arithmetic: N points need a span of (N - 1) rollups.
    start = end - timedelta(seconds=rollup * (points - 1))
    chart: BarChart | None = None
    first_bucket: datetime | None = None
    error = ""
    try:
        series = tsdb.get_range(project, stat, start, end, rollup=rollup)
    except tsdb.QueryError as exc:
        error = str(exc)
    else:
        chart = bar_chart(series, rollup)
        if series:
            first_bucket = epoch_to_datetime(series[0][0])
    return {
        "chart": chart,
        "error": error,
        "stat": stat,
        "stats": list(STAT_CODES),
        "resolution": format_resolution(rollup),
        "resolutions": [format_resolution(r) for r in rollups],
        "first_bucket": first_bucket,
        "end": end,
        "changelist_filters": request.GET.get("_changelist_filters", ""),
    }


def _username_lookup(relation: str) -> str:
    """The search lookup of a related user's login name, whatever the user model calls it."""
    return f"{relation}__{get_user_model().USERNAME_FIELD}"


class AutocompleteIfSearchable(admin.options.BaseModelAdmin):
    """Autocomplete widgets where the admin site allows them, raw id inputs elsewhere.

    Django's autocomplete needs the related model registered on the same
    admin site with search fields (``admin.E039``/``E040`` otherwise), and a
    site's user admin may not be. So the fields of ``autocomplete_candidates``
    are also listed in ``raw_id_fields`` (which ``check`` accepts anywhere),
    and become autocompletes per request, on the site this admin is
    registered with, where that site's admin of the related model can search.
    """

    autocomplete_candidates: tuple[str, ...] = ()

    def get_autocomplete_fields(self, request: HttpRequest) -> list[str]:
        declared = list(super().get_autocomplete_fields(request))
        return declared + [
            name
            for name in self.autocomplete_candidates
            if name not in declared and self._can_search(name, request)
        ]

    def _can_search(self, name: str, request: HttpRequest) -> bool:
        related = self.model._meta.get_field(name).remote_field.model
        try:
            related_admin = self.admin_site.get_model_admin(related)
        except NotRegistered:
            return False
        return bool(related_admin.get_search_fields(request))


class OrganizationMemberInline(AutocompleteIfSearchable, admin.TabularInline):
    model = OrganizationMember
    extra = 0
    raw_id_fields = autocomplete_candidates = ("user",)


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ["slug", "name"]
    show_change_link = True


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "date_added"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [OrganizationMemberInline, ProjectInline]


@admin.register(Project)
class ProjectAdmin(AutocompleteIfSearchable, admin.ModelAdmin):
    list_display = ["slug", "name", "organization", "date_added"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["slug", "name", "organization__slug"]
    prepopulated_fields = {"slug": ["name"]}
    raw_id_fields = autocomplete_candidates = ("organization",)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Project | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.pk is not None:
            context["stats_chart"] = chart_context(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)


@admin.register(OrganizationMember)
class OrganizationMemberAdmin(AutocompleteIfSearchable, admin.ModelAdmin):
    list_display = ["user", "organization", "role", "date_added"]
    list_filter = ["role"]
    list_select_related = ["user", "organization"]
    search_fields = ["organization__slug"]
    raw_id_fields = autocomplete_candidates = ("user", "organization")

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [_username_lookup("user"), *super().get_search_fields(request)]


class RollupFilter(admin.SimpleListFilter):
    """The configured rollups, named as the API names resolutions (no DISTINCT scan)."""

    title = "rollup"
    parameter_name = "rollup"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(r), format_resolution(r)) for r, _ in tsdb.get_rollups()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        # Only offered values filter; anything else shows everything rather than failing.
        if value in {str(r) for r, _ in tsdb.get_rollups()}:
            return queryset.filter(rollup=int(value))
        return queryset


@admin.register(EventCount)
class EventCountAdmin(admin.ModelAdmin):
    list_display = ["project", "stat", "environment", "resolution", "timestamp", "count"]
    list_filter = [RollupFilter, "stat"]
    list_select_related = ["project__organization"]
    search_fields = ["project__slug", "project__organization__slug"]
    date_hierarchy = "timestamp"
    show_full_result_count = False

    @admin.display(description="rollup", ordering="rollup")
    def resolution(self, obj: EventCount) -> str:
        return format_resolution(obj.rollup)

    # Counts change through tsdb, never by hand.
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=list(DEFAULT_TOKEN_SCOPES),
    )

    class Meta:
        model = ApiToken
        fields = ["user", "name", "scopes", "expires_at"]

    # Who is asking, set per request by ApiTokenAdmin.get_form.
    issued_by: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the token held before this change: giving it more is issuing.
        self._held: tuple[set[str], datetime | None] = (
            set(self.instance.scopes or ()),
            self.instance.expires_at,
        )

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        if self.instance.pk is not None and cleaned is not None:
            self._check_more(cleaned)
        return cleaned

    def _check_more(self, cleaned: dict[str, Any]) -> None:
        """Refuse a change giving the token more than the one asking could issue.

        Wider scopes, a later expiry or none: the owner must still be
        active, and only the owner or a superuser gives (``check_token_owner``,
        the rule of issuing). Bringing an expired token back is a superuser's
        act alone: others issue a new token, which shows its secret once.
        """
        held_scopes, held_expiry = self._held
        widened = "scopes" in cleaned and not set(cleaned["scopes"]) <= held_scopes
        extended = (
            "expires_at" in cleaned
            and held_expiry is not None
            and (cleaned["expires_at"] is None or cleaned["expires_at"] > held_expiry)
        )
        if not (widened or extended):
            return
        try:
            check_token_owner(self.instance.user, issued_by=self.issued_by)
        except ValueError as error:
            if widened:
                self.add_error("scopes", f"Scopes cannot be added to this token. {error}")
            if extended:
                self.add_error("expires_at", f"This token's expiry cannot be extended. {error}")
            return
        asking = self.issued_by
        if (
            extended
            and held_expiry is not None
            and held_expiry <= timezone.now()
            and asking is not None
            and not getattr(asking, "is_superuser", False)
        ):
            self.add_error(
                "expires_at",
                "This token's expiry cannot be extended. Only superusers may extend an "
                "expired token; issue a new token instead.",
            )

    def clean_user(self) -> Any:
        user = self.cleaned_data.get("user")
        if self.instance.pk is None and user is not None:
            # The rules of ApiToken.objects.issue: the owner is active, and
            # only a superuser issues for someone else.
            try:
                check_token_owner(user, issued_by=self.issued_by)
            except ValueError as error:
                raise forms.ValidationError(str(error)) from None
        return user

    def clean_scopes(self) -> list[str]:
        try:
            return normalize_scopes(self.cleaned_data["scopes"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        if self.instance.pk is None and expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("A new token must expire in the future.")
        return expires_at


class ApiTokenStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet | None:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True
            )
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now, revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return None


def _is_superuser(request: HttpRequest) -> bool:
    return bool(getattr(request.user, "is_superuser", False))


# Plaintexts of tokens created by an add request, from save_model to response_add.
# Held in memory for that one request only: never in a message, session or cookie.
_new_plaintexts: weakref.WeakKeyDictionary[HttpRequest, str] = weakref.WeakKeyDictionary()


@admin.register(ApiToken)
class ApiTokenAdmin(AutocompleteIfSearchable, admin.ModelAdmin):
    """Tokens are listed by prefix; the secret is shown once, on the page after "Save".

    Revoking (the list action) keeps the row for the record; deleting works too.
    """

    form = ApiTokenForm
    list_display = [
        "token_label",
        "name",
        "user",
        "scope_list",
        "expires_at",
        "last_used",
        "status",
        "created",
    ]
    list_filter = [ApiTokenStatusFilter]
    list_select_related = ["user"]
    search_fields = ["prefix", "name"]
    raw_id_fields = autocomplete_candidates = ("user",)
    actions = ["revoke_selected"]
    created_template = "admin/project_stats/apitoken/token_created.html"

    @admin.display(description="token", ordering="prefix")
    def token_label(self, obj: ApiToken) -> str:
        return f"{obj.prefix}\u2026"

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiToken) -> str:
        return " ".join(obj.scopes)

    @admin.display(description="status")
    def status(self, obj: ApiToken) -> str:
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired() else "active"

    def get_form(
        self, request: HttpRequest, obj: ApiToken | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        # A class made for this request (modelform_factory), so this stays per
        # request; the attribute is ApiTokenForm.issued_by.
        form.issued_by = request.user  # type: ignore[attr-defined]
        return form

    def get_autocomplete_fields(self, request: HttpRequest) -> list[str]:
        # Only superusers choose among users; others issue for themselves.
        return super().get_autocomplete_fields(request) if _is_superuser(request) else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not _is_superuser(request):
            kwargs["queryset"] = db_field.related_model._default_manager.filter(pk=request.user.pk)
            kwargs["initial"] = request.user.pk
            # A choice of one, not the raw id input (no lookup among all users).
            kwargs["widget"] = forms.Select()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("user", "name", "scopes", "expires_at")
        return (
            "token_label",
            "user",
            "name",
            "scopes",
            "expires_at",
            "status",
            "created",
            "last_used",
            "revoked_at",
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ()
        # The owner is fixed: moving a live credential to someone else is a new token.
        return ("token_label", "user", "status", "created", "last_used", "revoked_at")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        # A pasted (e.g. leaked) token is found by its stored prefix.
        if tokens.is_well_formed(search_term.strip()):
            search_term = tokens.lookup_prefix(search_term.strip())
        return super().get_search_results(request, queryset, search_term)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [*super().get_search_fields(request), _username_lookup("user")]

    # Others' tokens are read-only to a staff user who is not a superuser:
    # listed and viewable (who holds which scopes, last use), never changed,
    # revoked or deleted, since a token acts with all of its owner's rights.
    def _may_alter(self, request: HttpRequest, obj: ApiToken | None) -> bool:
        return obj is None or _is_superuser(request) or obj.user_id == request.user.pk

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_alter(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_alter(request, obj)

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: ApiTokenQuerySet) -> None:
        others = 0
        if not _is_superuser(request):
            others = queryset.exclude(user=request.user.pk).count()
            queryset = queryset.filter(user=request.user.pk)
        revoked = queryset.revoke()
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
        if others:
            self.message_user(
                request,
                f"{others} token(s) of other users left as they were: "
                "only superusers revoke other users' tokens.",
                messages.WARNING,
            )

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            _new_plaintexts[request] = obj.assign_new_secret()
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        plaintext = _new_plaintexts.pop(request, None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": "API token created",
            "opts": opts,
            "token": obj,
            "plaintext": plaintext,
            "change_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[obj.pk],
                current_app=self.admin_site.name,
            ),
            "changelist_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_changelist",
                current_app=self.admin_site.name,
            ),
            "add_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_add", current_app=self.admin_site.name
            ),
        }
        # Rendered straight away rather than redirected with a message, so the
        # secret never sits in a message cookie or the session table.
        response = TemplateResponse(request, self.created_template, context)
        add_never_cache_headers(response)
        return response
