"""least-privilege group roles: taskhub_owner, taskhub_api, taskhub_worker, taskhub_readonly

Created when missing (cluster-wide, shared by every database on the server) and granted what
each component needs in this database; see migrations/sql/0017_roles.sql and
docs/operations.md, "Database roles".

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

from migrations.helpers import execute_sql_file

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    execute_sql_file("0017_roles.sql")


def downgrade() -> None:
    execute_sql_file("0017_roles_downgrade.sql")
