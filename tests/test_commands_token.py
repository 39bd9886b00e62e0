from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from project_stats import tokens
from project_stats.models import ApiToken

from .factories import UserFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("project_stats_token", *args, stdout=out)
    return out.getvalue().splitlines()


def test_prints_the_token_as_the_last_line_and_stores_only_its_digest() -> None:
    user = UserFactory(username="alice")
    lines = run("alice")
    plaintext = lines[-1]
    assert tokens.is_well_formed(plaintext)
    token = ApiToken.objects.get()
    assert token.user == user
    assert token.scopes == ["project:read"]
    assert token.expires_at is None
    assert token.digest == tokens.digest(plaintext)
    assert ApiToken.objects.find(plaintext) == token
    # The other lines describe the token without repeating the secret.
    assert not any(plaintext in line for line in lines[:-1])
    assert any(token.prefix in line for line in lines[:-1])


def test_scopes_expiry_and_name() -> None:
    UserFactory(username="bob")
    before = timezone.now()
    lines = run(
        "bob",
        "--scope",
        "project:write",
        "--scope",
        "org:read",
        "--scope",
        "org:read",
        "--expires-in-days",
        "30",
        "--name",
        "CI upload",
    )
    token = ApiToken.objects.get()
    assert token.scopes == ["org:read", "project:write"]
    assert token.name == "CI upload"
    assert token.expires_at is not None
    assert before + timedelta(days=30) <= token.expires_at <= timezone.now() + timedelta(days=30)
    assert ApiToken.objects.find(lines[-1]) == token


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "No user named 'nobody'"),
        (["no\x00body"], "No user named"),
        (["carol", "--scope", "project:delete"], "Unknown scope"),
        (["carol", "--scope", "project:read", "--scope", "PROJECT:READ"], "Unknown scope"),
        (["carol", "--scope", ""], "Unknown scope"),
        (["carol", "--expires-in-days", "0"], "positive"),
        (["carol", "--expires-in-days", "-3"], "positive"),
        (["carol", "--expires-in-days", "99999999999"], "too large"),
        (["carol", "--expires-in-days", "soon"], "invalid int value"),
        (["carol", "--name", "x" * 101], "at most 100"),
        (["carol", "--name", "a\x00b"], "without NUL"),
        (["dave"], "inactive"),
    ],
)
def test_bad_input_is_a_command_error_and_creates_nothing(args: list[str], message: str) -> None:
    UserFactory(username="carol")
    UserFactory(username="dave", is_active=False)
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not ApiToken.objects.exists()


def test_each_run_issues_a_new_token() -> None:
    UserFactory(username="erin")
    first, second = run("erin")[-1], run("erin")[-1]
    assert first != second
    assert ApiToken.objects.count() == 2
