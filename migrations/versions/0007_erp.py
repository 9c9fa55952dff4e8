"""moved to backend/examples/erp/migrations; kept so existing databases upgrade

The ERP sync example's tables are now its app's own revisions (``taskhub migrate --app
backend.examples.erp``, table ``alembic_version_erp``), which adopt the tables this revision
used to create. A database past 0007 keeps them; a new one gets no ``erp`` schema.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
