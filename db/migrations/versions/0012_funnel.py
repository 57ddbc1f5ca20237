"""Funnel rollups: the per-workspace profile ordinals, each profile's
first times of each event name per UTC day, and per event name and day
the set of profiles that did it as a bitmap of their ordinals (kept by
`AnalyticsRollupWorkflow` from its own watermark, `funnel`, so an existing
installation backfills them on its next pass).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A small dense number per profile of a workspace (0, 1, 2, ...): its
    # bit in the bitmaps below. Given on the profile's first rolled-up event.
    op.execute(
        """
        CREATE TABLE analytics_profile_ordinals (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            profile_id uuid NOT NULL,
            ordinal integer NOT NULL,
            PRIMARY KEY (workspace_id, profile_id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX analytics_profile_ordinals_ordinal ON analytics_profile_ordinals "
        "(workspace_id, ordinal)"
    )
    # The earliest times (up to 8, ascending) and the count of an event name
    # per profile and UTC day of `occurred_at`. Keyed profile first: a
    # funnel reads a few days of one profile for each of its steps, all on
    # the same index page.
    op.execute(
        """
        CREATE TABLE analytics_funnel_days (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            ordinal integer NOT NULL,
            day date NOT NULL,
            times timestamptz[] NOT NULL,
            count integer NOT NULL,
            PRIMARY KEY (workspace_id, ordinal, day, name)
        )
        """
    )
    # Who did an event name on a day: a zlib-compressed little-endian bitmap
    # of ordinals (bit n of the bytes = ordinal n); and beside it each such
    # profile's first second of that day and whether it did it more than
    # once (analytics/funnels.Firsts).
    op.execute(
        """
        CREATE TABLE analytics_funnel_bits (
            workspace_id uuid NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
            name text NOT NULL,
            day date NOT NULL,
            bits bytea NOT NULL,
            firsts bytea NOT NULL,
            PRIMARY KEY (workspace_id, name, day)
        )
        """
    )
    # Already compressed: stored out of line as is.
    op.execute("ALTER TABLE analytics_funnel_bits ALTER COLUMN bits SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE analytics_funnel_bits ALTER COLUMN firsts SET STORAGE EXTERNAL")


def downgrade() -> None:
    for table in ("analytics_funnel_bits", "analytics_funnel_days", "analytics_profile_ordinals"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DELETE FROM analytics_watermarks WHERE name = 'funnel'")
