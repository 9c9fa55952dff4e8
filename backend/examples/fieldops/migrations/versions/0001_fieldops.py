"""field operations: schema fieldops (schedules, notifications, audit trail, reports)

Revision ID: 0001
Revises:
Create Date: 2026-12-01
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
    execute_sql_file(SQL / "0001_fieldops.sql")


def downgrade() -> None:
    execute_sql_file(SQL / "0001_fieldops_downgrade.sql")
