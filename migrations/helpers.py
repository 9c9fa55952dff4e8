"""Helpers for revisions: run a frozen .sql file from migrations/sql/."""

from __future__ import annotations

from pathlib import Path

from backend.process import migrate

SQL_DIR = Path(__file__).resolve().parent / "sql"


def execute_sql_file(name: str) -> None:
    """Run a whole SQL file as written (no parameter parsing, so '%' stays as is)."""
    migrate.execute_sql_file(SQL_DIR / name)
