"""A multi-table-inheritance user: the user model's columns split over two tables."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models


class Person(AbstractUser):
    """The concrete parent: ``is_active`` and ``is_superuser`` live in its table."""


class Customer(Person):
    """The site's user model (``AUTH_USER_MODEL``): a child table keyed by ``person_ptr``."""

    company = models.CharField(max_length=100, blank=True, default="")

    objects = UserManager()  # type: ignore[misc]
