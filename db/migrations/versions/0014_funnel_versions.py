"""Funnel rollups: a version per day row of `analytics_funnel_bits`, the
id of the transaction that last wrote it, so a process that keeps decoded
rows (analytics/funnel_cache.py) can tell which ones changed since.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before have 0; the next slice that touches one gives it its
    # own transaction id (never reused, unlike 32-bit xmin).
    op.execute("ALTER TABLE analytics_funnel_bits ADD COLUMN version bigint NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE analytics_funnel_bits DROP COLUMN version")
