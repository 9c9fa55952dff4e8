"""alembic environment: one connection, under an advisory lock so concurrent migrators wait."""

from __future__ import annotations

import psycopg
import sqlalchemy
from alembic import context

from backend.errors import SettingsError
from backend.settings import load_settings

# Any constant works; it only has to be the same for every taskhub migrator.
MIGRATION_LOCK_ID = 7_461_726_100


def _database_url() -> str:
    url = context.config.attributes.get("database_url") or load_settings().database_url
    if not url:
        raise SettingsError("set DATABASE_URL, or run `taskhub migrate` to use the embedded server")
    return str(url)


def run_migrations_online() -> None:
    url = _database_url()
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=sqlalchemy.NullPool
    )
    with engine.connect() as connection:
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_ID})")
        connection.commit()
        try:
            context.configure(connection=connection, transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})")
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "taskhub migrations run online only: set DATABASE_URL and run `taskhub migrate`"
    )
run_migrations_online()
