"""alembic environment of taskhub's own schema (apps' schemas run without one: see
backend/process/migrate.py)."""

from __future__ import annotations

from alembic import context

from backend.errors import SettingsError
from backend.process.migrate import run_migrations_online
from backend.settings import load_settings


def _database_url() -> str:
    url = context.config.attributes.get("database_url") or load_settings().database_url
    if not url:
        raise SettingsError("set DATABASE_URL, or run `taskhub migrate` to use the embedded server")
    return str(url)


if context.is_offline_mode():
    raise SystemExit(
        "taskhub migrations run online only: set DATABASE_URL and run `taskhub migrate`"
    )
run_migrations_online(_database_url())
