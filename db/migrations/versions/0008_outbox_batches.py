"""Outbox rows carry batches: one row per statement and consumer with arrays
of the events it announces, instead of one row per event.

The tracking hot path wrote one outbox row (heap tuple, primary-key entry,
WAL) per announced event inside its group commit; a group of 30 events now
writes one row (see bench/compare_trees.py for what it bought). `size` is
the number of events in a row, so that a dispatcher can bound a claim in
events without reading the arrays. Existing rows become batches of one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE outbox
            ADD COLUMN size integer NOT NULL DEFAULT 1,
            ADD COLUMN profile_ids uuid[],
            ADD COLUMN event_ids uuid[],
            ADD COLUMN event_names text[],
            ADD COLUMN occurred_ats timestamptz[],
            ADD COLUMN message_ids text[]
        """
    )
    op.execute(
        """
        UPDATE outbox SET profile_ids = ARRAY[profile_id], event_ids = ARRAY[event_id],
            event_names = ARRAY[event_name], occurred_ats = ARRAY[occurred_at],
            message_ids = ARRAY[message_id]
        """
    )
    op.execute(
        """
        ALTER TABLE outbox
            DROP COLUMN profile_id, DROP COLUMN event_id, DROP COLUMN event_name,
            DROP COLUMN occurred_at, DROP COLUMN message_id,
            ALTER COLUMN size DROP DEFAULT,
            ALTER COLUMN profile_ids SET NOT NULL,
            ALTER COLUMN event_ids SET NOT NULL,
            ALTER COLUMN event_names SET NOT NULL,
            ALTER COLUMN occurred_ats SET NOT NULL,
            ALTER COLUMN message_ids SET NOT NULL
        """
    )
    # A /track group's row (30 events, ~2 KB) is just over the 2 KB at which
    # PostgreSQL tries to compress a row by default: random ids barely
    # compress (~10%), and the attempt cost more than the rest of the insert
    # (41-49 us a row with it, 23-30 us without, on a busy 2-CPU machine).
    # Rows now stay inline, uncompressed, up to a page; larger ones (more
    # than ~100 events) are compressed and toasted as before.
    op.execute("ALTER TABLE outbox SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox RESET (toast_tuple_target)")
    op.execute(
        """
        CREATE TABLE outbox_single AS
        SELECT o.workspace_id, o.consumer, u.p AS profile_id, u.e AS event_id, u.n AS event_name,
               u.o AS occurred_at, u.m AS message_id, o.created_at, o.claimed_until, o.attempts,
               row_number() OVER (ORDER BY o.id, u.k) AS position
        FROM outbox o, unnest(o.profile_ids, o.event_ids, o.event_names, o.occurred_ats, o.message_ids)
             WITH ORDINALITY AS u(p, e, n, o, m, k)
        """
    )
    op.execute("DELETE FROM outbox")
    op.execute(
        """
        ALTER TABLE outbox
            DROP COLUMN size, DROP COLUMN profile_ids, DROP COLUMN event_ids, DROP COLUMN event_names,
            DROP COLUMN occurred_ats, DROP COLUMN message_ids,
            ADD COLUMN profile_id uuid NOT NULL, ADD COLUMN event_id uuid NOT NULL,
            ADD COLUMN event_name text, ADD COLUMN occurred_at timestamptz, ADD COLUMN message_id text
        """
    )
    op.execute(
        """
        INSERT INTO outbox (workspace_id, consumer, profile_id, event_id, event_name, occurred_at, message_id,
                            created_at, claimed_until, attempts)
        SELECT workspace_id, consumer, profile_id, event_id, event_name, occurred_at, message_id,
               created_at, claimed_until, attempts
        FROM outbox_single ORDER BY position
        """
    )
    op.execute("DROP TABLE outbox_single")
