"""the finish trigger leaves batched finishes to the worker, which notifies after its commit

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0009_batched_finish_notifies.sql")


def downgrade() -> None:
    execute_sql_file("0009_batched_finish_notifies_downgrade.sql")
