"""Dashboard passwords, session cookies and settings, without a database."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from pydantic import SecretStr, ValidationError

from backend.auth import ApiToken, Scope
from backend.dashboard.passwords import hash_password, parse_users, verify_password
from backend.dashboard.sessions import CookieSigner, Logins, LoginThrottle, derived_secret
from backend.dashboard.settings import DashboardSettings

SECRET = "s" * 40


def test_a_password_hash_verifies_only_its_password() -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in encoded
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct hors", encoded)
    assert hash_password("correct horse") != encoded  # salted


def test_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        hash_password("short")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("alice", "name=scope:hash"),
        ("alice=root:scrypt$1", "name=scope:hash"),
        ("=read:x", "name=scope:hash"),
        ("alice=read:md5$abc", "scrypt"),
        ("alice=read:scrypt$16384$8$1$zz$zz", "damaged"),
        ("alice=read:scrypt$1000$8$1$00$" + "00" * 32, "out of range"),
    ],
)
def test_users_are_checked_when_read(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_users(value)


def test_users_parse_and_hide_their_hash() -> None:
    encoded = hash_password("password one")
    users = parse_users(f"alice=operate:{encoded}, bob=read:{encoded}")
    assert [(user.name, user.scope) for user in users] == [
        ("alice", Scope.operate),
        ("bob", Scope.read),
    ]
    assert encoded not in repr(users)
    with pytest.raises(ValueError, match="twice"):
        parse_users(f"alice=read:{encoded},alice=operate:{encoded}")


def test_settings_refuse_a_short_secret_and_bad_users() -> None:
    with pytest.raises(ValidationError, match="32 characters"):
        DashboardSettings(secret=SecretStr("short"))
    with pytest.raises(ValidationError, match="name=scope:hash"):
        DashboardSettings(users="alice")


def test_a_session_resumes_while_its_credential_stands() -> None:
    token = ApiToken(name="ops", scope=Scope.operate, secret="operate-token-0123456789")
    logins = Logins([token], [])
    found = logins.with_token("operate-token-0123456789")
    assert found is not None
    session, fingerprint = found
    signer = CookieSigner(SECRET, max_age=60)
    cookie = signer.dump(session, fingerprint)
    assert token.secret not in cookie
    payload = signer.load(cookie)
    assert payload is not None
    assert logins.resume(payload) == session
    # The token's scope is read again: lowered, the session follows.
    lowered = Logins([ApiToken(name="ops", scope=Scope.read, secret=token.secret)], [])
    resumed = lowered.resume(payload)
    assert resumed is not None
    assert resumed.scope == Scope.read
    # Another token under the same name does not resume it.
    assert Logins([ApiToken("ops", Scope.operate, "x" * 20)], []).resume(payload) is None
    assert logins.with_token("wrong-token-0123456789") is None


def test_a_cookie_is_refused_when_tampered_signed_elsewhere_or_expired() -> None:
    token = ApiToken(name="ops", scope=Scope.operate, secret="operate-token-0123456789")
    found = Logins([token], []).with_token(token.secret)
    assert found is not None
    cookie = CookieSigner(SECRET, max_age=1).dump(*found)
    assert CookieSigner("t" * 40, max_age=60).load(cookie) is None
    assert CookieSigner(SECRET, max_age=60).load(cookie.replace(".", "x.", 1)) is None
    assert CookieSigner(SECRET, max_age=60).load("garbage") is None
    time.sleep(2.1)  # itsdangerous stamps whole seconds
    assert CookieSigner(SECRET, max_age=1).load(cookie) is None


def test_password_logins_need_the_right_user_and_password() -> None:
    logins = Logins([], parse_users(f"alice=operate:{hash_password('password one')}"))
    assert logins.with_password("alice", "password two") is None
    assert logins.with_password("bob", "password one") is None
    found = logins.with_password("alice", "password one")
    assert found is not None
    assert found[0].actor == "dashboard:alice"
    assert found[0].can_operate


def test_the_derived_secret_needs_every_credential_and_changes_with_them() -> None:
    admin = ApiToken("root", Scope.admin, "admin-token-0123456789")
    reader = ApiToken("viewer", Scope.read, "read-token-0123456789")
    users = parse_users(f"alice=operate:{hash_password('password one')}")
    secret = derived_secret([admin, reader], users)
    assert len(secret) == 64
    assert derived_secret([admin, reader], users) == secret  # every process agrees
    assert admin.secret not in secret
    assert derived_secret([reader], users) != secret  # a reader alone cannot compute it
    assert derived_secret([admin, reader], []) != secret
    rotated = ApiToken("root", Scope.admin, "admin-token-9876543210")
    assert derived_secret([rotated, reader], users) != secret


def test_hash_password_command_prints_a_usable_hash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend", "hash-password"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        check=True,
    )
    encoded = done.stdout.strip()
    assert verify_password("a long enough password", encoded)
    short = subprocess.run(
        [sys.executable, "-m", "backend", "hash-password"],
        input="short\n",
        capture_output=True,
        text=True,
    )
    assert short.returncode == 2
    assert "at least 8" in short.stderr


def test_failed_logins_are_throttled_per_address() -> None:
    now = [1000.0]
    throttle = LoginThrottle(limit=3, window=60, clock=lambda: now[0], max_clients=2)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 60
    assert throttle.retry_after("10.0.0.2") is None  # another address is not held back
    now[0] += 30
    assert throttle.retry_after("10.0.0.1") == 30
    now[0] += 31
    assert throttle.retry_after("10.0.0.1") is None  # the failures left the window
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None
    # Memory stays bounded: a flood of addresses keeps at most max_clients.
    for address in range(100):
        throttle.failed(f"10.1.0.{address}")
    assert len(throttle._failures) <= 2
