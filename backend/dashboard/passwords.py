"""Dashboard users' passwords, kept only as scrypt hashes (``hashlib``: no extra dependency).

A hash reads ``scrypt$<n>$<r>$<p>$<salt hex>$<key hex>``: the parameters travel with it, so
stronger ones later do not invalidate the hashes already configured.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from backend.auth import Scope

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
KEY_BYTES = 32
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"passwords must be at least {MIN_PASSWORD_LENGTH} characters long")
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=256 * 1024 * 1024
    )


def _parse_hash(encoded: str) -> tuple[bytes, int, int, int, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError(
            "a password hash must be the scrypt$... text `taskhub hash-password` prints"
        )
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        raise ValueError("a password hash is damaged: run `taskhub hash-password` again") from None
    if n < 2**10 or n & (n - 1) or not 0 < r <= 64 or not 0 < p <= 16 or len(key) != KEY_BYTES:
        raise ValueError("a password hash has parameters out of range")
    return salt, n, r, p, key


def verify_password(password: str, encoded: str) -> bool:
    salt, n, r, p, key = _parse_hash(encoded)
    return hmac.compare_digest(_derive(password, salt, n, r, p), key)


@dataclass(frozen=True)
class DashboardUser:
    name: str
    scope: Scope
    password_hash: str

    def __repr__(self) -> str:  # never print the hash
        return f"DashboardUser(name={self.name!r}, scope={self.scope.name})"


def parse_users(value: str) -> list[DashboardUser]:
    """Parse ``name=scope:hash,...``; raise ValueError saying what is wrong."""
    users: list[DashboardUser] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, equals, rest = entry.partition("=")
        scope_name, colon, password_hash = rest.partition(":")
        if not equals or not colon or not name or scope_name not in Scope.__members__:
            raise ValueError(
                "each user must be name=scope:hash with scope read, operate or admin "
                f"(got {entry[:20]!r})"
            )
        _parse_hash(password_hash)
        if any(user.name == name for user in users):
            raise ValueError(f"user {name!r} is listed twice")
        users.append(DashboardUser(name=name, scope=Scope[scope_name], password_hash=password_hash))
    return users
