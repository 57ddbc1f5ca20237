"""Event backbone: the transactional outbox and its listeners.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Time-ordered UUIDs (version 7) in SQL, for events written set-wise
    # (segment refreshes): the same id scheme as core.ids.uuid7.
    op.execute(
        """
        CREATE FUNCTION mp_uuid7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
        DECLARE b bytea := uuid_send(gen_random_uuid());
        BEGIN
            b := overlay(b PLACING substring(
                int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6);
            b := set_byte(b, 6, (get_byte(b, 6) & 15) | 112);
            RETURN encode(b, 'hex')::uuid;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TABLE outbox_listeners (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            kind text NOT NULL,
            name text NOT NULL,
            consumer text NOT NULL,
            PRIMARY KEY (workspace_id, kind, name, consumer)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE outbox (
            id bigserial PRIMARY KEY,
            workspace_id uuid NOT NULL,
            consumer text NOT NULL,
            profile_id uuid NOT NULL,
            event_id uuid NOT NULL,
            event_name text,
            occurred_at timestamptz,
            message_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            claimed_until timestamptz,
            attempts integer NOT NULL DEFAULT 0
        )
        """
    )
    # The dispatcher walks the primary key (unclaimed rows are nearly all
    # rows: claimed ones are deleted within moments); the sweep reads expired
    # claims through this partial index, which an insert (unclaimed) never
    # touches. An index on unclaimed ids cost /track a measurable share of
    # its commit latency with a listener active (bench/tracking.py --listen).
    op.execute("CREATE INDEX outbox_claimed_idx ON outbox (claimed_until) WHERE claimed_until IS NOT NULL")
    # Segments that exist already start listening.
    op.execute(
        """
        INSERT INTO outbox_listeners (workspace_id, kind, name, consumer)
        SELECT DISTINCT workspace_id, 'event', unnest(event_names), 'segments' FROM segments
        UNION
        SELECT DISTINCT workspace_id, 'trait', unnest(trait_keys), 'segments' FROM segments
        UNION
        SELECT DISTINCT workspace_id, 'merge', '*', 'segments' FROM segments
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE outbox")
    op.execute("DROP TABLE outbox_listeners")
    op.execute("DROP FUNCTION mp_uuid7()")
