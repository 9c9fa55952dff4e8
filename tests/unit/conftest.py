"""Unit-test fixtures: no database, no network, and no configuration from the real environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

LEAKY_NAMES = frozenset({"DATABASE_URL", "TEST_DATABASE_URL"})


def is_taskhub_variable(name: str) -> bool:
    """pydantic-settings reads variables case-insensitively, so match them that way too."""
    upper = name.upper()
    return upper in LEAKY_NAMES or upper.startswith("TASKHUB_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset DATABASE_URL, TEST_DATABASE_URL and every TASKHUB_* variable for each unit test."""
    for name in list(os.environ):
        if is_taskhub_variable(name):
            monkeypatch.delenv(name)


def compose_services(path: Path) -> dict[str, dict[str, Any]]:
    """The ``services`` of a compose file."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    found = document["services"]
    assert isinstance(found, dict)
    return found
