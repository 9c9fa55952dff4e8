"""the jobs table vacuumed after every 5,000 dead rows, whatever its size

Fetches walk the todo jobs' index from its front, through the dead entries of jobs already
fetched; see migrations/sql/0019_jobs_autovacuum.sql.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0019_jobs_autovacuum.sql")


def downgrade() -> None:
    execute_sql_file("0019_jobs_autovacuum_downgrade.sql")
