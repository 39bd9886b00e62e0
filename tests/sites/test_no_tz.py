from __future__ import annotations

import pytest
from django.core.checks import Error, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError


def test_the_check_refuses_the_site_and_says_why() -> None:
    errors = [m for m in run_checks() if m.id == "project_stats.E010"]
    assert len(errors) == 1
    assert isinstance(errors[0], Error)
    assert "USE_TZ = True" in errors[0].msg
    assert "every authenticated API request fails" in errors[0].msg


def test_manage_py_check_fails() -> None:
    with pytest.raises(SystemCheckError, match=r"project_stats\.E010"):
        call_command("check")
