"""new jobs' events and NOTIFYs written once per INSERT statement, not once per row

Replaces procrastinate's two per-row insert triggers with one statement-level trigger doing
the same work set-wise; see migrations/sql/0018_setwise_defer.sql.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0018_setwise_defer.sql")


def downgrade() -> None:
    execute_sql_file("0018_setwise_defer_downgrade.sql")
