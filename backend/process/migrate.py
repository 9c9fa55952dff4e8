"""Run alembic programmatically: taskhub's schema, then each enabled app's, under one lock.

taskhub's revisions live in ``migrations/`` (table ``alembic_version``). An app's live in its
own folder (``TaskhubApp.migrations``, a ``versions/`` of alembic revisions, no env.py) and
are recorded in a table of its own (``alembic_version_<app>``): an app's schema is created
only where the app is enabled, and turning it off never confuses taskhub's history.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import psycopg
import sqlalchemy
import sqlalchemy.exc
from alembic import command, context, op
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory

from backend.declare.apps import TaskhubApp
from backend.errors import DatabaseUnavailable
from backend.queries import QUERIES

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
# Any constant works; it only has to be the same for every taskhub migrator.
MIGRATION_LOCK_ID = 7_461_726_100


def alembic_config(url: str, script_location: Path = MIGRATIONS_DIR) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["database_url"] = url
    return config


def run_migrations_online(url: str, version_table: str = "alembic_version") -> None:
    """Inside an alembic environment: migrate on one connection, under an advisory lock so
    concurrent migrators wait for each other."""
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=sqlalchemy.NullPool
    )
    with engine.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_ID})")
        connection.exec_driver_sql(QUERIES["migrate_as_owner"])
        connection.commit()
        try:
            context.configure(
                connection=connection,
                transaction_per_migration=True,
                version_table=version_table,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})")
            connection.commit()
    engine.dispose()


def execute_sql_file(path: Path) -> None:
    """In a revision: run a whole SQL file as written (no parameter parsing: '%' stays)."""
    text = path.read_text(encoding="utf-8")
    connection = op.get_bind().connection.dbapi_connection
    assert connection is not None
    connection.execute(text)


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc.orig}".strip()) from exc


def _migrate_app(url: str, app: TaskhubApp, target: str, direction: Literal["up", "down"]) -> None:
    assert app.migrations is not None
    config = alembic_config(url, app.migrations)
    script = ScriptDirectory.from_config(config)

    def steps(revision: Any, _context: Any) -> Any:
        if direction == "up":
            return script._upgrade_revs(target, revision)
        return script._downgrade_revs(target, revision)

    with EnvironmentContext(config, script, fn=steps, destination_rev=target):
        run_migrations_online(url, app.version_table)


def upgrade(url: str, revision: str = "head", apps: Sequence[TaskhubApp] = ()) -> None:
    """taskhub's schema to ``revision``, then every app's that has migrations to its head."""
    with _reachable():
        command.upgrade(alembic_config(url), revision)
        for app in apps:
            if app.migrations is not None:
                _migrate_app(url, app, "head", "up")


def downgrade(url: str, revision: str = "base", apps: Sequence[TaskhubApp] = ()) -> None:
    """To ``base``: the apps' schemas first (they may depend on taskhub's), then taskhub's.
    To another revision: taskhub's alone."""
    with _reachable():
        if revision == "base":
            for app in reversed(apps):
                if app.migrations is not None:
                    _migrate_app(url, app, "base", "down")
        command.downgrade(alembic_config(url), revision)


def head_revision(script_location: Path = MIGRATIONS_DIR) -> str:
    """The newest revision in a folder of revisions (taskhub's by default)."""
    head = ScriptDirectory.from_config(alembic_config("", script_location)).get_current_head()
    assert head is not None
    return head
