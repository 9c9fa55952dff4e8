"""indexes the jobs list reads for a rare status and a creation window

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0015_job_list_indexes.sql")


def downgrade() -> None:
    execute_sql_file("0015_job_list_indexes_downgrade.sql")
