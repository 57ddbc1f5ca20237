"""Segments and their memberships.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE segments (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            description text,
            definition jsonb NOT NULL,
            event_names text[] NOT NULL DEFAULT '{}',
            trait_keys text[] NOT NULL DEFAULT '{}',
            segment_refs uuid[] NOT NULL DEFAULT '{}',
            version integer NOT NULL DEFAULT 1,
            member_count integer,
            computed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT segments_workspace_name_key UNIQUE (workspace_id, name)
        )
        """
    )
    op.execute("CREATE INDEX segments_workspace_id_idx ON segments (workspace_id, id)")
    # No foreign key to profiles: a refresh inserts up to millions of rows,
    # and profile erasure / merges delete memberships themselves.
    op.execute(
        """
        CREATE TABLE segment_memberships (
            segment_id uuid NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
            profile_id uuid NOT NULL,
            workspace_id uuid NOT NULL,
            entered_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (segment_id, profile_id)
        )
        """
    )
    op.execute("CREATE INDEX segment_memberships_profile_idx ON segment_memberships (profile_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS segment_memberships")
    op.execute("DROP TABLE IF EXISTS segments")
