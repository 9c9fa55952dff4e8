"""per-minute task statistics and counters that outlive pruning

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0011_task_stats.sql")


def downgrade() -> None:
    execute_sql_file("0011_task_stats_downgrade.sql")
