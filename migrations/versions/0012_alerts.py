"""alert rule states, webhook deliveries and the reporting views

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0012_alerts.sql")


def downgrade() -> None:
    execute_sql_file("0012_alerts_downgrade.sql")
