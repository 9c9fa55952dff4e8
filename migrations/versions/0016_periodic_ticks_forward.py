"""taskhub.defer_periodic_job: periodic ticks only move forward, whatever a worker's clock says

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0016_periodic_ticks_forward.sql")


def downgrade() -> None:
    execute_sql_file("0016_periodic_ticks_forward_downgrade.sql")
