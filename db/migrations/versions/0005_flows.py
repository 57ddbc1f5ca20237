"""Automation flows: flows, their immutable versions, enrollments and the
steps each enrollment took.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE flows (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            description text,
            status text NOT NULL DEFAULT 'draft',
            version integer NOT NULL DEFAULT 1,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT flows_workspace_name_key UNIQUE (workspace_id, name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE flow_versions (
            flow_id uuid NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
            version integer NOT NULL,
            workspace_id uuid NOT NULL,
            definition jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (flow_id, version)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE flow_enrollments (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL,
            flow_id uuid NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
            version integer NOT NULL,
            profile_id uuid NOT NULL,
            enrollment_key text NOT NULL DEFAULT '',
            workflow_id text NOT NULL,
            status text NOT NULL DEFAULT 'running',
            current_node text,
            trigger_event_id uuid,
            payload jsonb NOT NULL DEFAULT '{}'::jsonb,
            entered_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            completed_at timestamptz,
            converted_at timestamptz
        )
        """
    )
    # One running enrollment per person (and enrollment key) and flow.
    op.execute(
        "CREATE UNIQUE INDEX flow_enrollments_running_key "
        "ON flow_enrollments (flow_id, profile_id, enrollment_key) WHERE status = 'running'"
    )
    op.execute("CREATE INDEX flow_enrollments_profile_idx ON flow_enrollments (workspace_id, profile_id)")
    op.execute("CREATE INDEX flow_enrollments_flow_idx ON flow_enrollments (flow_id, id)")
    op.execute(
        """
        CREATE TABLE flow_steps (
            enrollment_id uuid NOT NULL REFERENCES flow_enrollments(id) ON DELETE CASCADE,
            seq integer NOT NULL,
            flow_id uuid NOT NULL,
            node_id text NOT NULL,
            edge text,
            outcome text,
            entered_at timestamptz NOT NULL DEFAULT now(),
            left_at timestamptz,
            PRIMARY KEY (enrollment_id, seq)
        )
        """
    )
    op.execute("CREATE INDEX flow_steps_flow_node_idx ON flow_steps (flow_id, node_id)")
    op.execute(
        "ALTER TABLE messages ADD COLUMN flow_id uuid, ADD COLUMN flow_version integer, "
        "ADD COLUMN flow_node text, ADD COLUMN enrollment_id uuid, "
        "ADD COLUMN marketing boolean NOT NULL DEFAULT false"
    )
    # The frequency cap counts a person's recent marketing messages.
    op.execute(
        "CREATE INDEX messages_marketing_idx ON messages (workspace_id, profile_id, created_at) "
        "WHERE marketing"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE messages DROP COLUMN flow_id, DROP COLUMN flow_version, DROP COLUMN flow_node, "
        "DROP COLUMN enrollment_id, DROP COLUMN marketing"
    )
    op.execute("DROP TABLE flow_steps")
    op.execute("DROP TABLE flow_enrollments")
    op.execute("DROP TABLE flow_versions")
    op.execute("DROP TABLE flows")
