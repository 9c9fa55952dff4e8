"""Run alembic programmatically, so `taskhub migrate` needs no alembic.ini lookup."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from backend.errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc.orig}".strip()) from exc


def upgrade(url: str, revision: str = "head") -> None:
    with _reachable():
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    with _reachable():
        command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest revision in migrations/versions."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head
