"""Email delivery: templates, providers, suppressions, messages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE templates (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            subject text NOT NULL,
            html text NOT NULL,
            text text,
            from_name text,
            from_email text NOT NULL,
            reply_to text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT templates_workspace_name_key UNIQUE (workspace_id, name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE providers (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('ses', 'sendgrid', 'mixmax', 'smtp')),
            priority integer NOT NULL DEFAULT 100,
            rate_limit double precision,
            enabled boolean NOT NULL DEFAULT true,
            settings jsonb NOT NULL DEFAULT '{}'::jsonb,
            secrets jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT providers_workspace_name_key UNIQUE (workspace_id, name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE suppressions (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            email citext NOT NULL,
            reason text NOT NULL,
            detail text,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (workspace_id, email)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE messages (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            idempotency_key text NOT NULL,
            profile_id uuid,
            email citext NOT NULL,
            template_id uuid,
            campaign_id text,
            data jsonb NOT NULL DEFAULT '{}'::jsonb,
            status text NOT NULL DEFAULT 'queued',
            subject text,
            links jsonb NOT NULL DEFAULT '[]'::jsonb,
            provider_id uuid,
            provider_kind text,
            provider_message_id text,
            error text,
            attempts jsonb NOT NULL DEFAULT '[]'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            sent_at timestamptz,
            delivered_at timestamptz,
            opened_at timestamptz,
            clicked_at timestamptz,
            CONSTRAINT messages_idempotency_key UNIQUE (workspace_id, idempotency_key)
        )
        """
    )
    op.execute("CREATE INDEX messages_provider_message_idx ON messages (provider_kind, provider_message_id)")
    op.execute("CREATE INDEX messages_workspace_id_idx ON messages (workspace_id, id)")


def downgrade() -> None:
    for table in ("messages", "suppressions", "providers", "templates"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
