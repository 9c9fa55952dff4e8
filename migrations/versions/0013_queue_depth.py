"""queue depth samples (taskhub.queue_depth)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0013_queue_depth.sql")


def downgrade() -> None:
    execute_sql_file("0013_queue_depth_downgrade.sql")
