"""cluster-wide rate limits

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0004_rate_limits.sql")


def downgrade() -> None:
    execute_sql_file("0004_rate_limits_downgrade.sql")
