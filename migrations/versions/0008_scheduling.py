"""moved to backend/examples/scheduling/migrations; kept so existing databases upgrade

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Nothing: the schedule sync example's tables belong to its app now."""


def downgrade() -> None:
    """Nothing: a database that has the tables keeps them for the app to manage."""
