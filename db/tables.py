"""Table definitions (SQLAlchemy Core) used by the repositories.

The schema itself is created by the Alembic migrations in `db/migrations`;
these definitions must match them (a test compares the two).
Every table carries `workspace_id` and every query filters on it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, CITEXT, JSONB, UUID

metadata = MetaData()


def _ts(name: str, **kw: object) -> Column:
    return Column(name, DateTime(timezone=True), **kw)


workspaces = Table(
    "workspaces",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("settings", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("created_at", nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("kind", Text, nullable=False),  # 'public' | 'secret'
    Column("prefix", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("name", Text, nullable=True),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("revoked_at", nullable=True),
    _ts("last_used_at", nullable=True),
)

profiles = Table(
    "profiles",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("email", CITEXT, nullable=True),
    Column("external_id", Text, nullable=True),
    Column("traits", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("first_seen", nullable=False, server_default=func.now()),
    _ts("last_seen", nullable=False, server_default=func.now()),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "email", name="profiles_workspace_email_key"),
    UniqueConstraint("workspace_id", "external_id", name="profiles_workspace_external_id_key"),
)

profile_aliases = Table(
    "profile_aliases",
    metadata,
    Column("workspace_id", UUID(as_uuid=True), primary_key=True),
    Column("anonymous_id", Text, primary_key=True),
    Column("profile_id", UUID(as_uuid=True), ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False),
    _ts("created_at", nullable=False, server_default=func.now()),
    Index("profile_aliases_profile_idx", "profile_id"),
)

# Partitioned by RANGE (occurred_at), monthly; see db/migrations and
# activities/partitions.py. No foreign key to profiles: an FK check per
# inserted row would lock profile rows on the ingestion hot path; profile
# deletion and merges move or delete events explicitly.
events = Table(
    "events",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("type", Text, nullable=False),  # 'track' | 'page' | 'screen' | 'system'
    Column("name", Text, nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("context", JSONB, nullable=True),
    _ts("occurred_at", nullable=False),
    _ts("received_at", nullable=False),
    Column("message_id", Text, nullable=False),
)

segments = Table(
    "segments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("definition", JSONB, nullable=False),
    Column("event_names", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("trait_keys", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("segment_refs", ARRAY(UUID(as_uuid=True)), nullable=False, server_default=text("'{}'")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("member_count", Integer, nullable=True),
    _ts("computed_at", nullable=True),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "name", name="segments_workspace_name_key"),
)

segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("segment_id", UUID(as_uuid=True), ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
    Column("profile_id", UUID(as_uuid=True), primary_key=True),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    _ts("entered_at", nullable=False, server_default=func.now()),
)

templates = Table(
    "templates",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=True),
    Column("from_name", Text, nullable=True),
    Column("from_email", Text, nullable=False),
    Column("reply_to", Text, nullable=True),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "name", name="templates_workspace_name_key"),
)

providers = Table(
    "providers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("100")),
    Column("rate_limit", Float, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("settings", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("secrets", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "name", name="providers_workspace_name_key"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("email", CITEXT, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=True),
    _ts("created_at", nullable=False, server_default=func.now()),
)

messages = Table(
    "messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("idempotency_key", Text, nullable=False),
    Column("profile_id", UUID(as_uuid=True), nullable=True),
    Column("email", CITEXT, nullable=False),
    Column("template_id", UUID(as_uuid=True), nullable=True),
    Column("campaign_id", Text, nullable=True),
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", Text, nullable=False, server_default=text("'queued'")),
    Column("subject", Text, nullable=True),
    Column("links", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("provider_id", UUID(as_uuid=True), nullable=True),
    Column("provider_kind", Text, nullable=True),
    Column("provider_message_id", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    _ts("sent_at", nullable=True),
    _ts("delivered_at", nullable=True),
    _ts("opened_at", nullable=True),
    _ts("clicked_at", nullable=True),
    Column("flow_id", UUID(as_uuid=True), nullable=True),
    Column("flow_version", Integer, nullable=True),
    Column("flow_node", Text, nullable=True),
    Column("enrollment_id", UUID(as_uuid=True), nullable=True),
    # Flow and campaign sends (not transactional ones): the frequency cap counts them.
    Column("marketing", Boolean, nullable=False, server_default=text("false")),
    # The subscription topic (topics.key) of a flow or campaign send; people
    # who left it are not sent to.
    Column("topic", Text, nullable=True),
    # A campaign send: the campaign whose snapshot it belongs to, and the
    # A/B test group's variant (what campaign_counters count it under).
    Column("recipient_campaign_id", UUID(as_uuid=True), nullable=True),
    Column("recipient_variant", SmallInteger, nullable=True),
    UniqueConstraint("workspace_id", "idempotency_key", name="messages_idempotency_key"),
)

# Subscription topics of a workspace (newsletter, product updates, ...),
# addressed by `key`.
topics = Table(
    "topics",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "key", name="topics_workspace_key"),
)

# The topics a profile left (no row: subscribed).
topic_optouts = Table(
    "topic_optouts",
    metadata,
    Column("workspace_id", UUID(as_uuid=True), primary_key=True),
    Column("profile_id", UUID(as_uuid=True), ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_key", Text, primary_key=True),
    _ts("created_at", nullable=False, server_default=func.now()),
    Index("topic_optouts_topic_idx", "workspace_id", "topic_key"),
)

# What some consumer listens for, per workspace: an event name, a top-level
# trait key, or merges ('merge', '*'). Kept by the consumers' own services
# (segments today, flows next); the event writer joins against it.
outbox_listeners = Table(
    "outbox_listeners",
    metadata,
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("kind", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("consumer", Text, primary_key=True),
)

# Deliveries not yet handed to Temporal, written in the same statement as
# the events (or profile changes) they announce; see events/.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("consumer", Text, nullable=False),
    # The events (or profile changes) a row announces, as parallel arrays
    # of `size` elements: one row per writing statement and consumer.
    Column("size", Integer, nullable=False),
    Column("profile_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("event_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("event_names", ARRAY(Text), nullable=False),  # NULL elements: profile changes
    # Each event's idempotency key: consumers read the event by its index.
    Column("occurred_ats", ARRAY(DateTime(timezone=True)), nullable=False),
    Column("message_ids", ARRAY(Text), nullable=False),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("claimed_until", nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Index("outbox_claimed_idx", "claimed_until", postgresql_where=text("claimed_until IS NOT NULL")),
)

flows = Table(
    "flows",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("status", Text, nullable=False, server_default=text("'draft'")),  # draft|active|paused|archived
    Column("version", Integer, nullable=False, server_default=text("1")),  # the version new enrollments take
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "name", name="flows_workspace_name_key"),
)

# Immutable: an edit of a flow that has run adds a version.
flow_versions = Table(
    "flow_versions",
    metadata,
    Column("flow_id", UUID(as_uuid=True), ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("definition", JSONB, nullable=False),
    _ts("created_at", nullable=False, server_default=func.now()),
)

flow_enrollments = Table(
    "flow_enrollments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("flow_id", UUID(as_uuid=True), ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("enrollment_key", Text, nullable=False, server_default=text("''")),
    Column("workflow_id", Text, nullable=False),
    Column(
        "status", Text, nullable=False, server_default=text("'running'")
    ),  # running|completed|exited|converted|failed
    Column("current_node", Text, nullable=True),
    Column("trigger_event_id", UUID(as_uuid=True), nullable=True),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("entered_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    _ts("completed_at", nullable=True),
    _ts("converted_at", nullable=True),
)

flow_steps = Table(
    "flow_steps",
    metadata,
    Column(
        "enrollment_id",
        UUID(as_uuid=True),
        ForeignKey("flow_enrollments.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("flow_id", UUID(as_uuid=True), nullable=False),
    Column("node_id", Text, nullable=False),
    Column("edge", Text, nullable=True),
    Column("outcome", Text, nullable=True),
    _ts("entered_at", nullable=False, server_default=func.now()),
    _ts("left_at", nullable=True),
)

# -- analytics rollups (migration 0009; kept by analytics/rollups.py) ------------


def _rollup(name: str, *columns: Column, key: tuple[str, ...]) -> Table:
    return Table(name, metadata, *columns, PrimaryKeyConstraint(*key))


analytics_event_hours = _rollup(
    "analytics_event_hours",
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    _ts("hour", nullable=False),
    Column("count", BigInteger, nullable=False),
    key=("workspace_id", "name", "hour"),
)
analytics_property_hours = _rollup(
    "analytics_property_hours",
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
    _ts("hour", nullable=False),
    Column("count", BigInteger, nullable=False),
    key=("workspace_id", "name", "key", "hour", "value"),
)
analytics_property_days = _rollup(
    "analytics_property_days",
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("count", BigInteger, nullable=False),
    key=("workspace_id", "name", "key", "day", "value"),
)


def _email_rollup(name: str, time_column: Column) -> Table:
    return _rollup(
        name,
        Column("workspace_id", UUID(as_uuid=True), nullable=False),
        time_column,
        Column("name", Text, nullable=False),
        Column("flow_id", Text, nullable=False, server_default=text("''")),
        Column("campaign_id", Text, nullable=False, server_default=text("''")),
        Column("provider", Text, nullable=False, server_default=text("''")),
        Column("count", BigInteger, nullable=False),
        key=("workspace_id", time_column.name, "name", "flow_id", "campaign_id", "provider"),
    )


analytics_email_hours = _email_rollup("analytics_email_hours", _ts("hour", nullable=False))
analytics_email_days = _email_rollup("analytics_email_days", Column("day", Date, nullable=False))
analytics_profile_hours = _rollup(
    "analytics_profile_hours",
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    _ts("hour", nullable=False),
    Column("new_profiles", BigInteger, nullable=False),
    key=("workspace_id", "hour"),
)
analytics_active_days = _rollup(
    "analytics_active_days",
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date, nullable=False),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    key=("workspace_id", "day", "profile_id"),
)
analytics_active_counts = _rollup(
    "analytics_active_counts",
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date, nullable=False),
    Column("profiles", BigInteger, nullable=False),
    key=("workspace_id", "day"),
)
analytics_segment_sizes = _rollup(
    "analytics_segment_sizes",
    Column("segment_id", UUID(as_uuid=True), nullable=False),
    _ts("hour", nullable=False),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("member_count", BigInteger, nullable=False),
    key=("segment_id", "hour"),
)
analytics_watermarks = _rollup(
    "analytics_watermarks",
    Column("name", Text, nullable=False),
    _ts("value", nullable=False),
    _ts("updated_at", nullable=False, server_default=func.now()),
    key=("name",),
)


campaigns = Table(
    "campaigns",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "workspace_id", UUID(as_uuid=True), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", Text, nullable=False),
    # draft|scheduled|sending|paused|sent|cancelled|failed
    Column("status", Text, nullable=False, server_default=text("'draft'")),
    Column("content", JSONB, nullable=False),  # definitions.campaigns.CampaignContent
    Column("audience", JSONB, nullable=False),  # definitions.campaigns.CampaignAudience
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("topic", Text, nullable=True),
    Column("throttle_per_hour", Integer, nullable=True),
    # scheduled_at is a wall-clock time in each recipient's timezone
    Column("local_time", Boolean, nullable=False, server_default=text("false")),
    _ts("scheduled_at", nullable=True),
    _ts("started_at", nullable=True),
    _ts("finished_at", nullable=True),
    # Progress, mirrored from the send workflow.
    Column("recipients", Integer, nullable=False, server_default=text("0")),
    Column("sent", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("suppressed", Integer, nullable=False, server_default=text("0")),
    Column("unknown", Integer, nullable=False, server_default=text("0")),
    Column("cancelled", Integer, nullable=False, server_default=text("0")),
    Column("detail", Text, nullable=True),
    _ts("created_at", nullable=False, server_default=func.now()),
    _ts("updated_at", nullable=False, server_default=func.now()),
    Column("ab_test", JSONB, nullable=True),  # definitions.campaigns.ABTest
    Column("ab_winner", Integer, nullable=True),  # the winning variant's index (0: A)
    _ts("ab_decided_at", nullable=True),
    # Recipients over the workspace's frequency cap are left out (`capped`).
    Column("respect_frequency_cap", Boolean, nullable=False, server_default=text("true")),
    Column("capped", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("workspace_id", "name", name="campaigns_workspace_name_key"),
)

# The audience snapshot a send walks by `seq`.
campaign_recipients = Table(
    "campaign_recipients",
    metadata,
    Column(
        "campaign_id", UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("seq", Integer, primary_key=True),
    Column("workspace_id", UUID(as_uuid=True), nullable=False),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("email", CITEXT, nullable=False),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("variant", Integer, nullable=True),
    _ts("send_at", nullable=True),  # local-time campaigns: when this recipient is due
    # pending|cancelled|capped (over the frequency cap: no message)
    Column("status", Text, nullable=False, server_default=text("'pending'")),
)

# A campaign's stats as running sums per (A/B variant or -1, provider or
# ''), in shards added to concurrently; kept by triggers on
# campaign_recipients and messages (db/migrations/versions/0013).
campaign_counters = Table(
    "campaign_counters",
    metadata,
    Column(
        "campaign_id", UUID(as_uuid=True), ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("variant", SmallInteger, primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("shard", SmallInteger, primary_key=True),
    *(
        Column(name, Integer, nullable=False, server_default=text("0"))
        for name in (
            "recipients",
            "waiting",
            "cancelled",
            "capped",
            "messages",
            "settled",
            "sent",
            "delivered",
            "bounced",
            "complained",
            "failed",
            "suppressed",
            "unknown",
            "unique_opens",
            "unique_clicks",
        )
    ),
)
