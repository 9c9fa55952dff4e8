"""ERP sync example tables: erp.assets, erp.locations, erp.sync_runs

Written to adopt what taskhub's own revision 0007 created before the example became an app
(IF NOT EXISTS throughout): on such a database this revision only records itself.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from pathlib import Path

from backend.process.migrate import execute_sql_file

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

SQL = Path(__file__).resolve().parent.parent / "sql"


def upgrade() -> None:
    execute_sql_file(SQL / "0001_erp.sql")


def downgrade() -> None:
    execute_sql_file(SQL / "0001_erp_downgrade.sql")
