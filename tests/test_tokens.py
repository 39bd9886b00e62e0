from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections

from project_stats import tokens
from project_stats.models import ApiToken

from .factories import ApiTokenFactory, UserFactory

# --- the pure functions -------------------------------------------------------


def test_generate_has_the_marker_and_the_documented_shape() -> None:
    token = tokens.generate()
    assert token.startswith("psk_")
    assert len(token) == tokens.TOKEN_LENGTH == 47
    assert token[4:].isalnum() and token.isascii()
    assert tokens.is_well_formed(token)


def test_generate_is_random() -> None:
    generated = {tokens.generate() for _ in range(500)}
    assert len(generated) == 500
    # Lookup prefixes too are spread out, not a counter or a timestamp.
    assert len({tokens.lookup_prefix(t) for t in generated}) == 500


@pytest.mark.parametrize(
    "value",
    [
        "",
        "psk_",
        "psk_" + "a" * 42,
        "psk_" + "a" * 44,
        "pat_" + "a" * 43,
        "PSK_" + "a" * 43,
        "psk_" + "a" * 42 + "-",
        "psk_" + "a" * 42 + "\n",
        "psk_" + "a" * 42 + "\xe9",
        "psk_" + "\uff41" * 43,  # full-width letters are not ASCII
        "x" * 10_000,
        None,
        b"psk_" + b"a" * 43,
        47,
    ],
)
def test_is_well_formed_refuses(value: object) -> None:
    assert not tokens.is_well_formed(value)


def test_digest_is_hex_sha256_of_the_whole_token() -> None:
    token = tokens.generate()
    assert tokens.digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert len(tokens.digest(token)) == 64


def test_lookup_prefix_is_the_marker_and_eight_characters() -> None:
    token = tokens.generate()
    assert tokens.lookup_prefix(token) == token[:12]
    assert tokens.LOOKUP_PREFIX_LENGTH == 12


def test_verify() -> None:
    token, other = tokens.generate(), tokens.generate()
    assert tokens.verify(token, tokens.digest(token))
    assert not tokens.verify(other, tokens.digest(token))
    assert not tokens.verify(token, "")


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    token = tokens.generate()
    assert tokens.verify(token, tokens.digest(token))
    assert calls == [(tokens.digest(token).encode(), tokens.digest(token).encode())]


# --- ApiToken and its manager -------------------------------------------------

pytestmark_db = pytest.mark.django_db


def all_stored_text() -> str:
    """Every column of every ApiToken row, as the database returns it."""
    table = connection.ops.quote_name(ApiToken._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608
        return repr(cursor.fetchall())


@pytestmark_db
def test_issue_returns_the_token_and_its_plaintext_once(now: datetime) -> None:
    user = UserFactory()
    token, plaintext = ApiToken.objects.issue(
        user,
        name="ci",
        scopes=["project:read", "org:read"],
        expires_at=now + timedelta(days=30),
        now=now,
    )
    token.refresh_from_db()
    assert token.user_id == user.pk
    assert token.name == "ci"
    assert token.scopes == ["org:read", "project:read"]  # SCOPES order
    assert token.expires_at == now + timedelta(days=30)
    assert token.last_used is None and token.revoked_at is None
    assert tokens.is_well_formed(plaintext)
    assert token.prefix == plaintext[:12]
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()


@pytestmark_db
def test_the_plaintext_is_never_stored() -> None:
    issued = [ApiTokenFactory() for _ in range(3)]
    stored = all_stored_text()
    for token in issued:
        assert token.prefix in stored  # the scan does see the rows
        assert token.plaintext not in stored
        # Not even the part after the lookup prefix.
        assert token.plaintext[tokens.LOOKUP_PREFIX_LENGTH :] not in stored
        assert token.plaintext not in str(token) + repr(token)


@pytestmark_db
def test_issue_defaults_to_project_read_and_no_expiry() -> None:
    token, _ = ApiToken.objects.issue(UserFactory())
    assert token.scopes == ["project:read"]
    assert token.expires_at is None
    assert token.name == ""


@pytestmark_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scopes": ["project:read", "project:delete"]}, "Unknown scope"),
        ({"scopes": []}, "At least one scope"),
        ({"scopes": "project:read"}, "not one string"),
        ({"scopes": [None]}, "Unknown scope"),
        ({"name": "x" * 101}, "at most 100"),
        ({"name": "a\x00b"}, "without NUL"),
        ({"expires_at": datetime(2030, 1, 1)}, "aware"),  # noqa: DTZ001 - naive on purpose
        ({"expires_at": "past"}, "in the future"),
        ({"expires_at": "now"}, "in the future"),
    ],
)
def test_issue_refuses_bad_input_and_creates_nothing(
    kwargs: dict[str, object], message: str, now: datetime
) -> None:
    if kwargs.get("expires_at") == "past":
        kwargs["expires_at"] = now - timedelta(seconds=1)
    elif kwargs.get("expires_at") == "now":
        kwargs["expires_at"] = now
    with pytest.raises(ValueError, match=message):
        ApiToken.objects.issue(UserFactory(), now=now, **kwargs)  # type: ignore[arg-type]
    assert not ApiToken.objects.exists()


@pytestmark_db
def test_issue_refuses_inactive_and_unsaved_users() -> None:
    with pytest.raises(ValueError, match="inactive"):
        ApiToken.objects.issue(UserFactory(is_active=False))
    with pytest.raises(ValueError, match="saved"):
        ApiToken.objects.issue(UserFactory.build())
    assert not ApiToken.objects.exists()


@pytestmark_db
def test_scopes_field_validation() -> None:
    token = ApiTokenFactory()
    token.scopes = ["project:read", "everything"]
    with pytest.raises(ValidationError):
        token.full_clean()
    token.scopes = ["project:admin"]
    token.full_clean()


@pytestmark_db
def test_find_matches_the_whole_secret_not_just_the_prefix() -> None:
    token = ApiTokenFactory()
    assert ApiToken.objects.find(token.plaintext) == token
    tampered = token.plaintext[:-1] + ("a" if token.plaintext[-1] != "a" else "b")
    assert ApiToken.objects.find(tampered) is None
    assert ApiToken.objects.find(tokens.generate()) is None
    assert ApiToken.objects.find("junk") is None


@pytestmark_db
def test_find_handles_tokens_sharing_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = "psk_" + "A" * 8
    plaintexts = iter([shared + "b" * 35, shared + "c" * 35])
    monkeypatch.setattr(tokens, "generate", lambda: next(plaintexts))
    user = UserFactory()
    first, first_plaintext = ApiToken.objects.issue(user)
    second, second_plaintext = ApiToken.objects.issue(user)
    assert first.prefix == second.prefix == shared
    assert ApiToken.objects.find(first_plaintext) == first
    assert ApiToken.objects.find(second_plaintext) == second
    assert ApiToken.objects.find(shared + "d" * 35) is None


@pytestmark_db
def test_find_is_one_query(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    token = ApiTokenFactory()
    with django_assert_num_queries(1):
        found = ApiToken.objects.find(token.plaintext)
        assert found is not None
        assert found.user.pk == token.user_id  # user came with it


@pytestmark_db
def test_find_does_not_query_for_malformed_tokens(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_num_queries(0):
        assert ApiToken.objects.find("Bearer \xff\xfe") is None
        assert ApiToken.objects.find("psk_" + "a" * 10_000) is None


@pytestmark_db
def test_active_revoke_and_expiry(now: datetime) -> None:
    live = ApiTokenFactory()
    expiring = ApiTokenFactory(expires_at=now + timedelta(hours=1), now=now)
    revoked = ApiTokenFactory()
    assert ApiToken.objects.filter(pk=revoked.pk).revoke(now=now) == 1
    assert ApiToken.objects.filter(pk=revoked.pk).revoke(now=now + timedelta(days=1)) == 0
    revoked.refresh_from_db()
    assert revoked.is_revoked and revoked.revoked_at == now

    assert set(ApiToken.objects.active(now=now)) == {live, expiring}
    later = now + timedelta(hours=1)
    assert set(ApiToken.objects.active(now=later)) == {live}
    assert expiring.is_expired(now=later) and not expiring.is_expired(now=now)
    assert not live.is_expired(now=later + timedelta(days=10_000))


@pytestmark_db
def test_record_use_writes_at_most_once_a_minute(now: datetime) -> None:
    token = ApiTokenFactory()
    assert token.record_use(now=now)
    assert not token.record_use(now=now + timedelta(seconds=59))
    assert not token.record_use(now=now + timedelta(seconds=60))
    token.refresh_from_db()
    assert token.last_used == now
    assert token.record_use(now=now + timedelta(seconds=61))
    token.refresh_from_db()
    assert token.last_used == now + timedelta(seconds=61)


@pytestmark_db
def test_record_use_is_conditional_in_the_database(now: datetime) -> None:
    # Two copies of the same row, as two concurrent requests would hold.
    token = ApiTokenFactory()
    first = ApiToken.objects.get(pk=token.pk)
    second = ApiToken.objects.get(pk=token.pk)
    assert first.record_use(now=now)
    assert not second.record_use(now=now + timedelta(seconds=1))
    token.refresh_from_db()
    assert token.last_used == now


@pytestmark_db
def test_str_shows_only_the_prefix() -> None:
    token = ApiTokenFactory(name="deploy")
    assert str(token) == f"{token.prefix}\u2026 deploy"


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_concurrent_uses_write_last_used_once(now: datetime) -> None:
    token = ApiTokenFactory()
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    wrote: list[bool] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            copy = ApiToken.objects.get(pk=token.pk)  # last_used is None in every copy
            barrier.wait()
            wrote.append(copy.record_use(now=now))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=use) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(wrote) == [False] * (threads_n - 1) + [True]
    token.refresh_from_db()
    assert token.last_used == now
