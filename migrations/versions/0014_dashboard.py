"""the index of failed jobs the dashboard reads

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0014_dashboard.sql")


def downgrade() -> None:
    execute_sql_file("0014_dashboard_downgrade.sql")
