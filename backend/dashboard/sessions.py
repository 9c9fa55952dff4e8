"""Logging in to the dashboard, and the signed session cookie that follows.

The cookie holds who logged in, how (token or password), a fingerprint of that credential and
the session's CSRF token, signed with the dashboard secret and stamped with its time. Every
request re-reads the credential from the settings: a token removed or a password changed ends
its sessions at once, and a token's scope is always the current one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

from backend.auth import ApiToken, Scope, authenticate
from backend.auth import LoginThrottle as LoginThrottle  # its home before the API used it too
from backend.dashboard.passwords import DashboardUser, hash_password, verify_password

COOKIE = "taskhub_session"
#: Checked when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password("not a real password")


@dataclass(frozen=True)
class Session:
    user: str
    scope: Scope
    via: Literal["token", "password"]
    csrf: str

    @property
    def can_operate(self) -> bool:
        return self.scope >= Scope.operate

    @property
    def actor(self) -> str:
        """The audit log's name for this user's actions."""
        return f"dashboard:{self.user}"


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class Logins:
    """Who may log in: the API tokens, and the users of TASKHUB_DASHBOARD_USERS."""

    def __init__(self, tokens: list[ApiToken], users: list[DashboardUser]) -> None:
        self._tokens = tokens
        self._users = {user.name: user for user in users}

    def with_token(self, presented: str) -> tuple[Session, str] | None:
        token = authenticate(self._tokens, presented)
        if token is None:
            return None
        return _new_session(token.name, token.scope, "token"), _fingerprint(token.secret)

    def with_password(self, name: str, password: str) -> tuple[Session, str] | None:
        user = self._users.get(name)
        matches = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        if user is None or not matches:
            return None
        return _new_session(user.name, user.scope, "password"), _fingerprint(user.password_hash)

    def resume(self, payload: dict[str, Any]) -> Session | None:
        """The session a cookie's payload describes, if its credential still stands."""
        try:
            name, via, fingerprint, csrf = payload["u"], payload["v"], payload["k"], payload["c"]
        except (KeyError, TypeError):
            return None
        if via == "token":
            for token in self._tokens:
                if token.name == name and _same(_fingerprint(token.secret), fingerprint):
                    return Session(name, token.scope, "token", csrf)
        user = self._users.get(name) if via == "password" else None
        if user is not None and _same(_fingerprint(user.password_hash), fingerprint):
            return Session(name, user.scope, "password", csrf)
        return None


def _same(a: str, b: object) -> bool:
    return isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode())


def _new_session(user: str, scope: Scope, via: Literal["token", "password"]) -> Session:
    return Session(user=user, scope=scope, via=via, csrf=secrets.token_urlsafe(32))


class CookieSigner:
    """Signs session payloads (itsdangerous) and refuses them past ``max_age`` seconds."""

    def __init__(self, secret: str, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="taskhub-dashboard-session")
        self.max_age = max_age

    def dump(self, session: Session, fingerprint: str) -> str:
        payload = {"u": session.user, "v": session.via, "k": fingerprint, "c": session.csrf}
        return str(self._serializer.dumps(payload))

    def load(self, cookie: str) -> dict[str, Any] | None:
        try:
            payload = self._serializer.loads(cookie, max_age=int(self.max_age))
        except BadSignature:  # SignatureExpired included
            return None
        return payload if isinstance(payload, dict) else None


def derived_secret(tokens: list[ApiToken], users: list[DashboardUser]) -> str:
    """The signing key when TASKHUB_DASHBOARD_SECRET is unset: derived from every credential
    that may log in, so each process with the same settings derives the same key (nothing is
    written to disk), computing it needs every one of those secrets, and changing any of them
    ends every session."""
    material = "\n".join(
        [token.secret for token in tokens] + [user.password_hash for user in users]
    )
    return hmac.new(material.encode(), b"taskhub dashboard sessions", hashlib.sha256).hexdigest()
