"""paused queues, and taskhub's fetch that skips them

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0003_paused_queues.sql")


def downgrade() -> None:
    execute_sql_file("0003_paused_queues_downgrade.sql")
