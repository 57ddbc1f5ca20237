"""Campaigns: one-off sends to segments, and the audience snapshot a send
walks by sequence number.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE campaigns (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            status text NOT NULL DEFAULT 'draft',
            content jsonb NOT NULL,
            audience jsonb NOT NULL,
            data jsonb NOT NULL DEFAULT '{}'::jsonb,
            topic text,
            throttle_per_hour integer,
            local_time boolean NOT NULL DEFAULT false,
            scheduled_at timestamptz,
            started_at timestamptz,
            finished_at timestamptz,
            recipients integer NOT NULL DEFAULT 0,
            sent integer NOT NULL DEFAULT 0,
            failed integer NOT NULL DEFAULT 0,
            suppressed integer NOT NULL DEFAULT 0,
            unknown integer NOT NULL DEFAULT 0,
            cancelled integer NOT NULL DEFAULT 0,
            detail text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT campaigns_workspace_name_key UNIQUE (workspace_id, name)
        )
        """
    )
    # The snapshot: one row per address, numbered 1..n; `message_id` is fixed
    # here so every attempt at a recipient's send uses the same message row.
    op.execute(
        """
        CREATE TABLE campaign_recipients (
            campaign_id uuid NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            seq integer NOT NULL,
            workspace_id uuid NOT NULL,
            profile_id uuid NOT NULL,
            email citext NOT NULL,
            message_id uuid NOT NULL,
            variant smallint,
            send_at timestamptz,
            status text NOT NULL DEFAULT 'pending',
            PRIMARY KEY (campaign_id, seq)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS campaign_recipients")
    op.execute("DROP TABLE IF EXISTS campaigns")
