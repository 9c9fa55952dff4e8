"""Helpers for revisions: run a frozen .sql file from migrations/sql/."""

from __future__ import annotations

from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).resolve().parent / "sql"


def execute_sql_file(name: str) -> None:
    """Run a whole SQL file as written (no parameter parsing, so '%' stays as is)."""
    text = (SQL_DIR / name).read_text(encoding="utf-8")
    connection = op.get_bind().connection.dbapi_connection
    assert connection is not None
    connection.execute(text)
