"""API tokens are compared in constant time: every configured token, through hmac."""

from __future__ import annotations

import hmac

import pytest

from backend.auth import ApiToken, Scope, authenticate
from backend.dashboard.sessions import Logins

TOKENS = [
    ApiToken(name="a", scope=Scope.read, secret="first-token-0123456789"),
    ApiToken(name="b", scope=Scope.admin, secret="second-token-0123456789"),
    ApiToken(name="c", scope=Scope.operate, secret="third-token-0123456789"),
]


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Each call of hmac.compare_digest, which still does the comparing."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return seen


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        ("first-token-0123456789", "a"),  # a match early does not end the loop
        ("third-token-0123456789", "c"),
        ("third-token-012345678", None),  # a prefix
        ("x" * 10_000, None),
        ("", None),
    ],
)
def test_every_token_goes_through_compare_digest(
    comparisons: list[tuple[bytes, bytes]], presented: str, expected: str | None
) -> None:
    found = authenticate(TOKENS, presented)
    assert (found.name if found else None) == expected
    assert comparisons == [(token.secret.encode(), presented.encode()) for token in TOKENS]


def test_dashboard_token_logins_compare_the_same_way(
    comparisons: list[tuple[bytes, bytes]],
) -> None:
    logins = Logins(TOKENS, [])
    assert logins.with_token("second-token-0123456789") is not None
    assert logins.with_token("second-token-0123456780") is None
    assert len(comparisons) == 2 * len(TOKENS)
