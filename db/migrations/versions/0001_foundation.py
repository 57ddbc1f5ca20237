"""Foundation: workspaces, API keys, profiles, aliases, partitioned events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS citext")
    op.execute(
        """
        CREATE TABLE workspaces (
            id uuid PRIMARY KEY,
            name text NOT NULL UNIQUE,
            settings jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE api_keys (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            kind text NOT NULL CHECK (kind IN ('public', 'secret')),
            prefix text NOT NULL,
            key_hash text NOT NULL UNIQUE,
            name text,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            last_used_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id)")
    op.execute(
        """
        CREATE TABLE profiles (
            id uuid PRIMARY KEY,
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            email citext,
            external_id text,
            traits jsonb NOT NULL DEFAULT '{}'::jsonb,
            first_seen timestamptz NOT NULL DEFAULT now(),
            last_seen timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT profiles_workspace_email_key UNIQUE (workspace_id, email),
            CONSTRAINT profiles_workspace_external_id_key UNIQUE (workspace_id, external_id)
        )
        """
    )
    # Listing pages through a workspace by id (uuid7, so creation order).
    op.execute("CREATE INDEX profiles_workspace_id_idx ON profiles (workspace_id, id)")
    op.execute("CREATE INDEX profiles_traits_idx ON profiles USING gin (traits jsonb_path_ops)")
    op.execute(
        """
        CREATE TABLE profile_aliases (
            workspace_id uuid NOT NULL,
            anonymous_id text NOT NULL,
            profile_id uuid NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (workspace_id, anonymous_id)
        )
        """
    )
    op.execute("CREATE INDEX profile_aliases_profile_idx ON profile_aliases (profile_id)")

    op.execute(
        """
        CREATE TABLE events (
            id uuid NOT NULL,
            workspace_id uuid NOT NULL,
            profile_id uuid NOT NULL,
            type text NOT NULL,
            name text NOT NULL,
            properties jsonb NOT NULL DEFAULT '{}'::jsonb,
            context jsonb,
            occurred_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            message_id text NOT NULL
        ) PARTITION BY RANGE (occurred_at)
        """
    )
    # Idempotency: a retried message lands on the same key and is skipped.
    op.execute("CREATE UNIQUE INDEX events_idempotency_key ON events (workspace_id, message_id, occurred_at)")
    op.execute("CREATE INDEX events_profile_time_idx ON events (workspace_id, profile_id, occurred_at DESC)")
    op.execute("CREATE INDEX events_name_time_idx ON events (workspace_id, name, occurred_at)")
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")

    # One month's partition; rows of that month already in the default
    # partition are moved into it. Serialized by an advisory lock so the
    # scheduled workflow and a migration never race.
    op.execute(
        """
        CREATE FUNCTION mp_ensure_event_partition(month date) RETURNS text
        LANGUAGE plpgsql AS $$
        DECLARE
            start_ts timestamptz := (date_trunc('month', month)::date)::timestamp AT TIME ZONE 'UTC';
            end_ts timestamptz :=
                ((date_trunc('month', month) + interval '1 month')::date)::timestamp AT TIME ZONE 'UTC';
            part text := 'events_' || to_char(month, 'YYYY_MM');
            stray boolean;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('mp_event_partitions'));
            IF to_regclass(part) IS NOT NULL THEN
                RETURN NULL;
            END IF;
            SELECT EXISTS (
                SELECT 1 FROM events_default WHERE occurred_at >= start_ts AND occurred_at < end_ts
            ) INTO stray;
            IF NOT stray THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                    part, start_ts, end_ts);
            ELSE
                -- Rows of this month arrived before its partition existed:
                -- move them, then attach (the default keeps no row of the range).
                LOCK TABLE events_default IN EXCLUSIVE MODE;
                EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS)', part);
                EXECUTE format(
                    'WITH moved AS (DELETE FROM events_default '
                    'WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) '
                    'INSERT INTO %I SELECT * FROM moved', part) USING start_ts, end_ts;
                EXECUTE format(
                    'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    part, start_ts, end_ts);
            END IF;
            RETURN part;
        END
        $$
        """
    )
    # Partitions from last month to three months ahead, so a fresh install
    # ingests into real partitions before the maintenance schedule first runs.
    op.execute(
        """
        SELECT mp_ensure_event_partition(
            (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => m))::date
        )
        FROM generate_series(-1, 3) AS m
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS events CASCADE")
    op.execute("DROP FUNCTION IF EXISTS mp_ensure_event_partition(date)")
    op.execute("DROP TABLE IF EXISTS profile_aliases")
    op.execute("DROP TABLE IF EXISTS profiles")
    op.execute("DROP TABLE IF EXISTS api_keys")
    op.execute("DROP TABLE IF EXISTS workspaces")
