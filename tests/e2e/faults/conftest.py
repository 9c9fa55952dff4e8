"""Fixtures of the fault suite: a throwaway PostgreSQL server per test (see server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.faults.server import ThrowawayServer, throwaway_server


@pytest.fixture
def pg_server() -> Iterator[ThrowawayServer]:
    """A fresh, migrated server of the test's own: stop, restart or break it at will."""
    with throwaway_server() as server:
        yield server
