from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_migrations_are_current() -> None:
    out = StringIO()
    call_command("makemigrations", "project_stats", "--check", "--dry-run", stdout=out)
