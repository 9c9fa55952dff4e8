"""procrastinate 3.10.0 schema, frozen

Revision ID: 0001
Revises:
Create Date: 2026-11-22

The SQL is a frozen copy of procrastinate 3.10.0's schema.sql, so the database never
depends on which procrastinate happens to be installed. Upgrading procrastinate means
a new revision applying its migration files; tests/integration/test_migrations.py
fails until that revision exists.
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

PROCRASTINATE_VERSION = "3.10.0"


def upgrade() -> None:
    execute_sql_file(f"0001_procrastinate_{PROCRASTINATE_VERSION}.sql")


def downgrade() -> None:
    execute_sql_file(f"0001_procrastinate_{PROCRASTINATE_VERSION}_downgrade.sql")
