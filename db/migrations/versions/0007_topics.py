"""Subscription topics: the workspace's topics, each profile's opt-outs, and
the topic a message belongs to.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE topics (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            key text NOT NULL,
            name text NOT NULL,
            description text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT topics_workspace_key UNIQUE (workspace_id, key)
        )
        """
    )
    # One row per (profile, topic) the person left; erasing the profile
    # removes its rows. Deleting a topic keeps them on purpose: a send still
    # tagged with the key (a flow node, a queued message) and a topic made
    # again with the same key keep honouring the person's choice. The send
    # path and the segment compiler probe the primary key.
    op.execute(
        """
        CREATE TABLE topic_optouts (
            workspace_id uuid NOT NULL,
            profile_id uuid NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            topic_key text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (workspace_id, profile_id, topic_key)
        )
        """
    )
    op.execute("CREATE INDEX topic_optouts_topic_idx ON topic_optouts (workspace_id, topic_key)")
    op.execute("ALTER TABLE messages ADD COLUMN topic text")


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP COLUMN topic")
    op.execute("DROP TABLE topic_optouts")
    op.execute("DROP TABLE topics")
