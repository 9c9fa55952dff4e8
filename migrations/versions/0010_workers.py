"""the workers' own rows (host, pid, queues, concurrency, jobs done), kept after they stop

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0010_workers.sql")


def downgrade() -> None:
    execute_sql_file("0010_workers_downgrade.sql")
