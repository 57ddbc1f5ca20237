"""Campaigns: A/B tests (the test's definition, the winner chosen and
when) and the frequency cap (whether a campaign respects the workspace's
cap, and how many recipients it left out for it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE campaigns
            ADD COLUMN ab_test jsonb,
            ADD COLUMN ab_winner smallint,
            ADD COLUMN ab_decided_at timestamptz,
            ADD COLUMN respect_frequency_cap boolean NOT NULL DEFAULT true,
            ADD COLUMN capped integer NOT NULL DEFAULT 0
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE campaigns
            DROP COLUMN IF EXISTS ab_test,
            DROP COLUMN IF EXISTS ab_winner,
            DROP COLUMN IF EXISTS ab_decided_at,
            DROP COLUMN IF EXISTS respect_frequency_cap,
            DROP COLUMN IF EXISTS capped
        """
    )
