"""Who may read what: organization membership, then token scopes.

A view checks, in this order:

1. authentication (``HasScope.has_permission``): anonymous -> 401;
2. the object, looked up together with membership (``get_project_or_404``):
   unknown or not a member -> the same 404, so neither slugs nor ids can be probed;
3. the scopes (``check_object_permissions`` -> ``HasScope``): -> 403.

::

    class ProjectThingView(APIView):
        authentication_classes = [BearerTokenAuthentication, SessionAuthentication]
        permission_classes = [HasScope]
        required_scopes = PROJECT_READ_SCOPES

        def get(self, request, organization_id_or_slug, project_id_or_slug, **kwargs):
            project = get_project_or_404(
                request.user, organization_id_or_slug, project_id_or_slug
            )
            self.check_object_permissions(request, project)
            ...
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from .access import TokenCredential, id_or_slug, match
from .conf import project_stats_settings
from .constants import SCOPES
from .models import ApiToken, Organization, Project

__all__ = [
    "NOT_FOUND_MESSAGE",
    "HasScope",
    "get_organization_or_404",
    "get_project_or_404",
    "request_scopes",
]

NOT_FOUND_MESSAGE = "The requested resource does not exist"
_ALL_SCOPES = frozenset(SCOPES)

UserLike = AbstractBaseUser | AnonymousUser


@functools.cache
def _authentication_classes(paths: tuple[str, ...]) -> tuple[type, ...]:
    return tuple(import_string(path) for path in paths)


def request_scopes(request: Request) -> frozenset[str]:
    """The scopes a request acts with.

    A token request has its token's scopes. A user authenticated by one of
    ``PROJECT_STATS["FULL_SCOPE_AUTHENTICATION_CLASSES"]`` (by default DRF's
    ``SessionAuthentication``: a user logged in with a browser) has every
    scope, limited only by membership. Anything else (anonymous, HTTP Basic,
    ``RemoteUserAuthentication``, another class's token) has none.
    """
    auth = request.auth
    if isinstance(auth, ApiToken | TokenCredential):
        return frozenset(s for s in auth.scopes if isinstance(s, str)) & _ALL_SCOPES
    if not request.user.is_authenticated:
        return frozenset()
    full = _authentication_classes(project_stats_settings.FULL_SCOPE_AUTHENTICATION_CLASSES)
    if isinstance(request.successful_authenticator, full):
        return _ALL_SCOPES
    return frozenset()


def _can_see(user: UserLike) -> bool:
    return bool(user.is_authenticated and user.is_active)


def _is_superuser(user: UserLike) -> bool:
    return bool(getattr(user, "is_superuser", False))


def get_project_or_404(
    user: UserLike, organization_id_or_slug: str, project_id_or_slug: str
) -> Project:
    """The project ``organization_id_or_slug/project_id_or_slug`` if ``user`` may see it.

    Each segment is an id (ASCII digits only) or a slug. One query: the
    path and the membership are matched together, so an unknown
    organization, an unknown project and someone else's project all raise
    the same ``NotFound``, by id as by slug. Superusers see every project;
    anonymous and inactive users none.
    """
    organization = id_or_slug(organization_id_or_slug)
    project = id_or_slug(project_id_or_slug)
    if not _can_see(user) or organization is None or project is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    projects = Project.objects.filter(match(organization, "organization__"), match(project))
    if not _is_superuser(user):
        projects = projects.filter(organization__members__user=user.pk)
    try:
        return projects.select_related("organization").get()
    except Project.DoesNotExist:
        raise NotFound(NOT_FOUND_MESSAGE) from None


def get_organization_or_404(user: UserLike, organization_id_or_slug: str) -> Organization:
    """The organization of the path segment (id or slug) if ``user`` may see it; same rules."""
    organization = id_or_slug(organization_id_or_slug)
    if not _can_see(user) or organization is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    organizations = Organization.objects.filter(match(organization))
    if not _is_superuser(user):
        organizations = organizations.filter(members__user=user.pk)
    try:
        return organizations.get()
    except Organization.DoesNotExist:
        raise NotFound(NOT_FOUND_MESSAGE) from None


class HasScope(BasePermission):
    """Authenticated, and (per object) holding one of ``view.required_scopes``.

    ``required_scopes`` is a collection of scope names on the view (any one
    suffices), e.g. ``PROJECT_READ_SCOPES``; a view without one is a
    programming error, not a silent 403.
    """

    message = "You do not have permission to perform this action."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        required = getattr(view, "required_scopes", None)
        if isinstance(required, str) or not isinstance(required, Collection) or not required:
            raise ImproperlyConfigured(
                f"{type(view).__name__}.required_scopes must be a non-empty collection "
                "of scope names."
            )
        return not request_scopes(request).isdisjoint(required)
