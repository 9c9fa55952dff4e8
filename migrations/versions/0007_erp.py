"""ERP sync example tables

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0007_erp.sql")


def downgrade() -> None:
    execute_sql_file("0007_erp_downgrade.sql")
