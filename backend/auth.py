"""API tokens and their scopes: read < operate < admin.

``TASKHUB_TOKENS`` lists them as comma-separated ``scope:token`` pairs, optionally named
(``name=scope:token``); the name is what the audit log records. With none configured,
taskhub generates one admin token on first start and keeps it in ``<data dir>/admin-token``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

MIN_TOKEN_LENGTH = 16


class Scope(IntEnum):
    read = 1
    operate = 2
    admin = 3


@dataclass(frozen=True)
class ApiToken:
    name: str
    scope: Scope
    secret: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"ApiToken(name={self.name!r}, scope={self.scope.name})"


def parse_tokens(value: str) -> list[ApiToken]:
    """Parse ``[name=]scope:token,...``; raise ValueError saying what is wrong."""
    tokens: list[ApiToken] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, _, rest = entry.rpartition("=") if "=" in entry.split(":", 1)[0] else ("", "", entry)
        scope_name, separator, secret = rest.partition(":")
        if not separator or scope_name not in Scope.__members__:
            raise ValueError(
                f"each entry must be scope:token with scope read, operate or admin "
                f"(got {scope_name or entry[:10]!r})"
            )
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ValueError(f"tokens must be at least {MIN_TOKEN_LENGTH} characters long")
        scope = Scope[scope_name]
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:8]
        tokens.append(
            ApiToken(name=name or f"{scope.name}-{fingerprint}", scope=scope, secret=secret)
        )
    return tokens


def generated_admin_token(data_dir: Path) -> ApiToken:
    """The admin token kept in ``data_dir/admin-token``, created (0600) on first use."""
    path = data_dir / "admin-token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    return ApiToken(name="admin", scope=Scope.admin, secret=path.read_text().strip())


def authenticate(tokens: list[ApiToken], presented: str) -> ApiToken | None:
    """The token matching ``presented``, compared in constant time."""
    found = None
    for token in tokens:
        if hmac.compare_digest(token.secret.encode(), presented.encode()):
            found = token
    return found


class LoginThrottle:
    """Failed logins per client address: after ``limit`` within ``window`` seconds, that
    address is refused until its oldest failure leaves the window (guessing tokens or
    passwords stays slow). In memory, per process; at most ``max_clients`` addresses kept."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.limit, self.window, self._clock, self._max = limit, window, clock, max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque())
        horizon = self._clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        failures = self._recent(client)
        if len(failures) < self.limit:
            return None
        return max(1.0, failures[0] + self.window - self._clock())

    def failed(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= self._max:
            for known in list(self._failures):
                if not self._recent(known):
                    del self._failures[known]
            if len(self._failures) >= self._max:
                self._failures.pop(next(iter(self._failures)))
        failures = self._recent(client)
        failures.append(self._clock())
        self._failures[client] = failures

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
