"""external schedule sync example tables

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0008_scheduling.sql")


def downgrade() -> None:
    execute_sql_file("0008_scheduling_downgrade.sql")
