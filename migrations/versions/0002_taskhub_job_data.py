"""taskhub job data: progress, results, errors, audit log, idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0002_taskhub_job_data.sql")


def downgrade() -> None:
    execute_sql_file("0002_taskhub_job_data_downgrade.sql")
