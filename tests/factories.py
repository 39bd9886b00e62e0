from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from project_stats.models import ApiToken, Organization, OrganizationMember, Project


class UsernameUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("password")


class EmailUserFactory(factory.django.DjangoModelFactory):
    """For user models named by their email (``USERNAME_FIELD = "email"``)."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.django.Password("password")


# The test settings may swap AUTH_USER_MODEL (tests/settings_*_user.py).
UserFactory = (
    UsernameUserFactory if get_user_model().USERNAME_FIELD == "username" else EmailUserFactory
)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    organization = factory.SubFactory(OrganizationFactory)
    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda p: p.slug.replace("-", " ").title())


class OrganizationMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrganizationMember

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = OrganizationMember.Role.MEMBER


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """Issues through the manager, like real code; the plaintext is on ``.plaintext``."""

    class Meta:
        model = ApiToken

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"token {n}")
    scopes = factory.LazyFunction(lambda: ["project:read"])

    @classmethod
    def _create(cls, model_class: type[ApiToken], *args: Any, **kwargs: Any) -> ApiToken:
        token, plaintext = model_class.objects.issue(**kwargs)
        token.plaintext = plaintext  # type: ignore[attr-defined]
        return token
