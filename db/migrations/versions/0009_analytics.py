"""Analytics rollups: hourly event counts (with a per-property breakdown),
email engagement by flow / campaign / provider, new and daily active
profiles, segment sizes over time, and the watermarks that keep them
current (kept by `AnalyticsRollupWorkflow`, never by the ingest path).

A BRIN index on `events.received_at` lets each rollup run read only the
rows that arrived since its watermark; BRIN costs ingestion next to
nothing (one summary per 128 pages, not an entry per row).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX events_received_brin ON events USING brin (received_at) WITH (autosummarize = on)"
    )
    # A profile's messages, newest first (the dashboard's profile page).
    op.execute("CREATE INDEX messages_profile_idx ON messages (workspace_id, profile_id, id)")
    op.execute(
        """
        CREATE TABLE analytics_event_hours (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            hour timestamptz NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (workspace_id, name, hour)
        )
        """
    )
    op.execute("CREATE INDEX analytics_event_hours_hour_idx ON analytics_event_hours (workspace_id, hour)")
    op.execute(
        """
        CREATE TABLE analytics_property_hours (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            key text NOT NULL,
            value text NOT NULL,
            hour timestamptz NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (workspace_id, name, key, hour, value)
        )
        """
    )
    # The same per day: a 90-day breakdown reads 90 rows per value, not 2,160.
    op.execute(
        """
        CREATE TABLE analytics_property_days (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            key text NOT NULL,
            value text NOT NULL,
            day date NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (workspace_id, name, key, day, value)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE analytics_email_days (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            day date NOT NULL,
            name text NOT NULL,
            flow_id text NOT NULL DEFAULT '',
            campaign_id text NOT NULL DEFAULT '',
            provider text NOT NULL DEFAULT '',
            count bigint NOT NULL,
            PRIMARY KEY (workspace_id, day, name, flow_id, campaign_id, provider)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE analytics_email_hours (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            hour timestamptz NOT NULL,
            name text NOT NULL,
            flow_id text NOT NULL DEFAULT '',
            campaign_id text NOT NULL DEFAULT '',
            provider text NOT NULL DEFAULT '',
            count bigint NOT NULL,
            PRIMARY KEY (workspace_id, hour, name, flow_id, campaign_id, provider)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE analytics_profile_hours (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            hour timestamptz NOT NULL,
            new_profiles bigint NOT NULL,
            PRIMARY KEY (workspace_id, hour)
        )
        """
    )
    # Who was active on a day (a de-duplication set, pruned after a month)
    # and how many (kept).
    op.execute(
        """
        CREATE TABLE analytics_active_days (
            workspace_id uuid NOT NULL,
            day date NOT NULL,
            profile_id uuid NOT NULL,
            PRIMARY KEY (workspace_id, day, profile_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE analytics_active_counts (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            day date NOT NULL,
            profiles bigint NOT NULL,
            PRIMARY KEY (workspace_id, day)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE analytics_segment_sizes (
            segment_id uuid NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
            hour timestamptz NOT NULL,
            workspace_id uuid NOT NULL,
            member_count bigint NOT NULL,
            PRIMARY KEY (segment_id, hour)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE analytics_watermarks (
            name text PRIMARY KEY,
            value timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    for table in (
        "analytics_watermarks",
        "analytics_segment_sizes",
        "analytics_active_counts",
        "analytics_active_days",
        "analytics_profile_hours",
        "analytics_email_hours",
        "analytics_email_days",
        "analytics_property_days",
        "analytics_property_hours",
        "analytics_event_hours",
    ):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP INDEX messages_profile_idx")
    op.execute("DROP INDEX events_received_brin")
