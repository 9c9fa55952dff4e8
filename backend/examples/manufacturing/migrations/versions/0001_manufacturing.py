"""manufacturing example tables, in schema manufacturing: one SQL file per task family

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from pathlib import Path

from backend.process.migrate import execute_sql_file

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

SQL = Path(__file__).resolve().parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0001_schema.sql")
    for family in sorted(SQL.glob("0001_family_*.sql")):
        execute_sql_file(family)


def downgrade() -> None:
    execute_sql_file(SQL / "0001_downgrade.sql")
