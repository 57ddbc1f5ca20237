"""SQL of campaigns: the rows, the audience snapshot, a batch's message
rows, progress, and the stats and recipients the API reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    RowMapping,
    Select,
    Text,
    case,
    cast,
    column,
    except_,
    func,
    insert,
    literal,
    null,
    select,
    table,
    text,
    union,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.tables import campaign_recipients, campaigns, profiles, suppressions, topic_optouts
from definitions.campaigns import ABTest, CampaignProgress

Conn = AsyncSession | AsyncConnection

CAMPAIGN_COLUMNS = [c for c in campaigns.c if c.name != "workspace_id"]
# The zone names PostgreSQL knows (a trait naming another zone is ignored).
pg_zones = table("pg_timezone_names", column("name"))


async def lock(conn: Conn, workspace_id: uuid.UUID, campaign_id: uuid.UUID) -> RowMapping | None:
    """The campaign, locked until the transaction ends (a request changing
    it holds the lock until it commits, so a workflow reading it after a
    start or signal sees the committed change)."""
    stmt = (
        select(*CAMPAIGN_COLUMNS)
        .where(campaigns.c.workspace_id == workspace_id, campaigns.c.id == campaign_id)
        .with_for_update()
    )
    return (await conn.execute(stmt)).mappings().first()


async def status(conn: Conn, workspace_id: uuid.UUID, campaign_id: uuid.UUID) -> str | None:
    """The campaign's status (None when it is gone)."""
    stmt = select(campaigns.c.status).where(
        campaigns.c.workspace_id == workspace_id, campaigns.c.id == campaign_id
    )
    return (await conn.execute(stmt)).scalar_one_or_none()


async def set_status(
    conn: Conn,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    status: str,
    from_statuses: Sequence[str],
    **values: Any,
) -> RowMapping | None:
    """Move the campaign from one of `from_statuses` to `status` (None: it was in none of them)."""
    stmt = (
        campaigns.update()
        .where(
            campaigns.c.workspace_id == workspace_id,
            campaigns.c.id == campaign_id,
            campaigns.c.status.in_(list(from_statuses)),
        )
        .values(status=status, updated_at=func.now(), **values)
        .returning(*CAMPAIGN_COLUMNS)
    )
    return (await conn.execute(stmt)).mappings().first()


async def snapshot(
    conn: Conn,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    included: list[Select[Any]],
    excluded: list[Select[Any]],
    local_at: datetime | None = None,
    default_zone: str | None = None,
    topic: str | None = None,
    ab_test: ABTest | None = None,
) -> int:
    """Number the audience into `campaign_recipients` in one statement:
    members of any included segment (each a compiled `SELECT profile_id`),
    minus members of any excluded one, with an address, not suppressed
    (bounces, complaints and unsubscribes are suppressions). Profiles are
    unique per address in a workspace, so this is one row per address.
    Each row gets its message id now (`mp_uuid7()`), so every attempt at a
    recipient's send finds the same message row; people who left the
    campaign's `topic` are left out too. Returns the rows written.

    With `local_at` (a wall-clock time), each row is due at that time in
    the person's `timezone` trait (a zone PostgreSQL knows), else in
    `default_zone`, else UTC, and rows are numbered by when they are due.

    With `ab_test`, people are drawn in the order of a hash of (campaign,
    person); the first `test_percent` % (at least one per variant) form the
    test group, dealt round-robin to the variants, numbered first (variant
    by variant); the rest follow with no variant."""

    def ids(compiled: list[Select[Any]]) -> list[Select[Any]]:
        # Each compiled shape names its one column its own way.
        return [select(q.subquery().c[0].label("profile_id")) for q in compiled]

    audience: Any = union(*ids(included))
    if excluded:
        audience = except_(audience, *ids(excluded))
    chosen = audience.subquery("audience")
    suppressed = (
        select(literal(1))
        .where(suppressions.c.workspace_id == workspace_id, suppressions.c.email == profiles.c.email)
        .exists()
    )
    source: Any = profiles.join(chosen, chosen.c.profile_id == profiles.c.id)
    send_at: Any = literal(None, DateTime(timezone=True))
    if local_at is not None:
        zones = select(pg_zones.c.name).cte("zones").prefix_with("MATERIALIZED")
        source = source.outerjoin(zones, zones.c.name == profiles.c.traits["timezone"].astext)
        zone = func.coalesce(zones.c.name, literal(default_zone or "UTC"))
        send_at = func.timezone(zone, literal(local_at.replace(tzinfo=None), DateTime()))
    conditions = [profiles.c.workspace_id == workspace_id, profiles.c.email.is_not(None), ~suppressed]
    if topic is not None:
        left = (
            select(literal(1))
            .where(
                topic_optouts.c.workspace_id == workspace_id,
                topic_optouts.c.profile_id == profiles.c.id,
                topic_optouts.c.topic_key == topic,
            )
            .exists()
        )
        conditions.append(~left)
    columns = ["campaign_id", "seq", "workspace_id", "profile_id", "email", "message_id", "send_at"]
    if ab_test is None:
        numbered = (
            select(
                literal(campaign_id),
                func.row_number().over(order_by=(send_at, profiles.c.id)),
                literal(workspace_id),
                profiles.c.id,
                profiles.c.email,
                func.mp_uuid7(),
                send_at,
            )
            .select_from(source)
            .where(*conditions)
        )
    else:
        drawn = (
            select(
                profiles.c.id.label("profile_id"),
                profiles.c.email.label("email"),
                func.row_number()
                .over(
                    order_by=(func.md5(literal(str(campaign_id)) + cast(profiles.c.id, Text)), profiles.c.id)
                )
                .label("rn"),
                func.count().over().label("n"),
            )
            .select_from(source)
            .where(*conditions)
            .subquery("drawn")
        )
        k = len(ab_test.variants)
        test_size = func.least(
            drawn.c.n, func.greatest(k, func.ceil(drawn.c.n * ab_test.test_percent / 100.0))
        )
        variant = case((drawn.c.rn <= test_size, (drawn.c.rn - 1) % k), else_=null())
        numbered = select(
            literal(campaign_id),
            func.row_number().over(order_by=(variant.asc().nulls_last(), drawn.c.rn)),
            literal(workspace_id),
            drawn.c.profile_id,
            drawn.c.email,
            func.mp_uuid7(),
            literal(None, DateTime(timezone=True)),
            cast(variant, Integer),
        )
        columns.append("variant")
    stmt = insert(campaign_recipients).from_select(columns, numbered)
    return (await conn.execute(stmt)).rowcount


async def test_group_size(conn: Conn, campaign_id: uuid.UUID) -> int:
    """Recipients in the A/B test's group (they have a variant)."""
    stmt = select(func.count()).where(
        campaign_recipients.c.campaign_id == campaign_id, campaign_recipients.c.variant.is_not(None)
    )
    return (await conn.execute(stmt)).scalar_one()


async def waves(conn: Conn, campaign_id: uuid.UUID) -> list[tuple[int, datetime]]:
    """(first seq, due) of each group of recipients due together (local-time campaigns)."""
    stmt = (
        select(func.min(campaign_recipients.c.seq), campaign_recipients.c.send_at)
        .where(campaign_recipients.c.campaign_id == campaign_id, campaign_recipients.c.send_at.is_not(None))
        .group_by(campaign_recipients.c.send_at)
        .order_by(func.min(campaign_recipients.c.seq))
    )
    return [(r[0], r[1]) for r in await conn.execute(stmt)]


async def recipient_count(conn: Conn, campaign_id: uuid.UUID) -> int | None:
    """Rows of the snapshot (None when it was never taken)."""
    stmt = select(campaigns.c.started_at, campaigns.c.recipients).where(campaigns.c.id == campaign_id)
    row = (await conn.execute(stmt)).first()
    if row is None or row[0] is None:
        return None
    return row[1]


# A batch's message rows in one statement (the ones an earlier attempt made
# are left as they are), returning the batch's message ids in order with
# the variant each gets (A/B tests: the test group's own, the winner for
# the rest; its template when the variant has one). Each names the campaign
# and test variant its counters count it under (campaign_counters). The
# idempotency key is definitions.campaigns.message_key.
BATCH_MESSAGES_SQL = text(
    """
WITH batch AS (
    SELECT r.message_id, r.workspace_id, r.profile_id, r.email, r.seq, r.variant AS test_variant,
           coalesce(r.variant, CAST(:winner AS integer)) AS variant
    FROM campaign_recipients r
    WHERE r.campaign_id = :campaign AND r.seq BETWEEN :first AND :last AND r.status = 'pending'
),
created AS (
    INSERT INTO messages (id, workspace_id, idempotency_key, profile_id, email, template_id, campaign_id,
                          marketing, topic, recipient_campaign_id, recipient_variant)
    SELECT b.message_id, b.workspace_id, 'campaign:' || :campaign_text || ':' || b.profile_id, b.profile_id,
           b.email, coalesce((CAST(:templates AS uuid[]))[b.variant + 1], CAST(:template AS uuid)),
           :campaign_text, true, :topic, :campaign, b.test_variant
    FROM batch b
    ON CONFLICT DO NOTHING
)
SELECT message_id, variant FROM batch ORDER BY seq
"""
)


async def batch_messages(
    conn: Conn,
    campaign_id: uuid.UUID,
    template_id: uuid.UUID | None,
    first_seq: int,
    last_seq: int,
    topic: str | None = None,
    *,
    winner: int | None = None,
    variant_templates: Sequence[uuid.UUID | None] = (),
) -> list[tuple[uuid.UUID, int | None]]:
    """Create the message rows of recipients `first_seq`..`last_seq` still
    pending; their (message id, variant). `variant_templates[i]` is
    variant i's template when it has its own."""
    rows = await conn.execute(
        BATCH_MESSAGES_SQL,
        {
            "campaign": campaign_id,
            "campaign_text": str(campaign_id),
            "template": template_id,
            "templates": list(variant_templates),
            "winner": winner,
            "first": first_seq,
            "last": last_seq,
            "topic": topic,
        },
    )
    return [(r[0], r[1]) for r in rows]


async def capped_in(conn: Conn, campaign_id: uuid.UUID, first_seq: int, last_seq: int) -> int:
    """Recipients of the range left out for the frequency cap."""
    stmt = select(func.count()).where(
        campaign_recipients.c.campaign_id == campaign_id,
        campaign_recipients.c.seq.between(first_seq, last_seq),
        campaign_recipients.c.status == "capped",
    )
    return (await conn.execute(stmt)).scalar_one()


async def record_progress(
    conn: Conn, workspace_id: uuid.UUID, campaign_id: uuid.UUID, progress: CampaignProgress
) -> None:
    """Mirror the workflow's counters into the row (absolute values: repeating it is harmless)."""
    await conn.execute(
        campaigns.update()
        .where(campaigns.c.workspace_id == workspace_id, campaigns.c.id == campaign_id)
        .values(
            recipients=progress.total,
            sent=progress.sent,
            failed=progress.failed,
            suppressed=progress.suppressed,
            unknown=progress.unknown,
            cancelled=progress.cancelled,
            capped=progress.capped,
            updated_at=func.now(),
        )
    )


async def mark_started(
    conn: Conn, workspace_id: uuid.UUID, campaign_id: uuid.UUID, total: int, at: datetime
) -> None:
    """The snapshot is taken: `total` recipients; scheduled → sending (a
    campaign paused or cancelled meanwhile keeps that status)."""
    await conn.execute(
        text(
            "UPDATE campaigns SET started_at = :at, recipients = :total, updated_at = now(), "
            "status = CASE WHEN status = 'scheduled' THEN 'sending' ELSE status END "
            "WHERE workspace_id = :w AND id = :c"
        ),
        {"at": at, "total": total, "w": workspace_id, "c": campaign_id},
    )


# Stop what was not sent: queued messages become cancelled (a batch still
# running can no longer claim them), and so do their recipients and those
# never handed to a batch.
CANCEL_REMAINING_SQL = text(
    """
WITH stopped AS (
    UPDATE messages m SET status = 'cancelled', updated_at = now()
    FROM campaign_recipients r
    WHERE r.campaign_id = :campaign AND r.status = 'pending' AND m.id = r.message_id AND m.status = 'queued'
    RETURNING m.id
)
UPDATE campaign_recipients r SET status = 'cancelled'
WHERE r.campaign_id = :campaign AND r.status = 'pending'
  AND (r.message_id IN (SELECT id FROM stopped)
       OR NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id))
"""
)


async def cancel_remaining(conn: Conn, campaign_id: uuid.UUID) -> int:
    """Cancel every recipient not sent to; returns the campaign's cancelled recipients."""
    await conn.execute(CANCEL_REMAINING_SQL, {"campaign": campaign_id})
    counted = select(func.count()).where(
        campaign_recipients.c.campaign_id == campaign_id, campaign_recipients.c.status == "cancelled"
    )
    return (await conn.execute(counted)).scalar_one()


# -- reads of the API -----------------------------------------------------------

# The stats read the campaign's counters (db/tables.campaign_counters: a
# few rows per variant and provider, whatever the campaign's size; counting
# the snapshot joined to its messages took 51 ms at 10,000 recipients). A
# recipient is pending while `waiting` (its row is) and its message is not
# `settled` (past sending).
_COUNTS = """
coalesce(sum(c.recipients), 0) AS recipients,
coalesce(sum(c.sent), 0) AS sent,
coalesce(sum(c.unique_opens), 0) AS unique_opens,
coalesce(sum(c.unique_clicks), 0) AS unique_clicks,
coalesce(sum(c.waiting) - sum(c.settled), 0) AS pending
"""

STATS_SQL = text(
    f"""
SELECT {_COUNTS},
       coalesce(sum(c.cancelled), 0) AS cancelled,
       coalesce(sum(c.capped), 0) AS capped,
       coalesce(sum(c.delivered), 0) AS delivered,
       coalesce(sum(c.bounced), 0) AS bounced,
       coalesce(sum(c.complained), 0) AS complained,
       coalesce(sum(c.failed), 0) AS failed,
       coalesce(sum(c.suppressed), 0) AS suppressed,
       coalesce(sum(c.unknown), 0) AS unknown
FROM campaign_counters c
WHERE c.campaign_id = :campaign
"""
)

PROVIDER_STATS_SQL = text(
    """
SELECT c.provider, sum(c.sent) AS sent, sum(c.delivered) AS delivered, sum(c.bounced) AS bounced,
       sum(c.unique_opens) AS opened, sum(c.unique_clicks) AS clicked
FROM campaign_counters c
WHERE c.campaign_id = :campaign AND c.provider <> ''
GROUP BY c.provider HAVING sum(c.messages) > 0 ORDER BY c.provider
"""
)

# The campaign's `Email …` events (each carries `campaign_id`), read through
# (workspace_id, name, occurred_at) from the send's start on.
EVENT_STATS_SQL = text(
    """
SELECT date_trunc('hour', e.occurred_at) AS hour, e.name, count(*) AS n,
       count(DISTINCT e.properties->>'message_id') AS messages
FROM events e
WHERE e.workspace_id = :workspace AND e.name = ANY(:names) AND e.occurred_at >= :since
  AND e.properties->>'campaign_id' = :campaign
GROUP BY 1, 2 ORDER BY 1
"""
)


# Each A/B variant's test group: its people, sends and unique engagement
# (a message's first open and click), and those not handled yet.
VARIANT_STATS_SQL = text(
    f"""
SELECT c.variant, {_COUNTS}
FROM campaign_counters c
WHERE c.campaign_id = :campaign AND c.variant >= 0
GROUP BY c.variant HAVING sum(c.recipients) > 0 ORDER BY c.variant
"""
)


async def variant_stats(conn: Conn, campaign_id: uuid.UUID) -> Sequence[RowMapping]:
    """Counts per A/B variant of the test group, by variant index."""
    return (await conn.execute(VARIANT_STATS_SQL, {"campaign": campaign_id})).mappings().all()


async def record_winner(
    conn: Conn, workspace_id: uuid.UUID, campaign_id: uuid.UUID, winner: int
) -> RowMapping | None:
    """Store the A/B winner and when it was chosen (once: a winner already
    stored stays); returns (ab_winner, ab_decided_at) as stored."""
    await conn.execute(
        campaigns.update()
        .where(
            campaigns.c.workspace_id == workspace_id,
            campaigns.c.id == campaign_id,
            campaigns.c.ab_winner.is_(None),
        )
        .values(ab_winner=winner, ab_decided_at=func.now(), updated_at=func.now())
    )
    stmt = select(campaigns.c.ab_winner, campaigns.c.ab_decided_at).where(
        campaigns.c.workspace_id == workspace_id, campaigns.c.id == campaign_id
    )
    return (await conn.execute(stmt)).mappings().first()


async def stats(conn: Conn, campaign_id: uuid.UUID) -> RowMapping:
    """Counts of the campaign (its counters)."""
    return (await conn.execute(STATS_SQL, {"campaign": campaign_id})).mappings().one()


async def provider_stats(conn: Conn, campaign_id: uuid.UUID) -> Sequence[RowMapping]:
    """Counts per provider of the messages sent."""
    return (await conn.execute(PROVIDER_STATS_SQL, {"campaign": campaign_id})).mappings().all()


async def event_stats(
    conn: Conn, workspace_id: uuid.UUID, campaign_id: uuid.UUID, since: datetime, names: list[str]
) -> Sequence[RowMapping]:
    """(hour, event name, events, distinct messages) of the campaign's events."""
    params = {"workspace": workspace_id, "campaign": str(campaign_id), "since": since, "names": names}
    return (await conn.execute(EVENT_STATS_SQL, params)).mappings().all()


RECIPIENTS_SQL = text(
    """
SELECT r.seq, r.profile_id, r.email::text AS email, r.message_id,
       CASE WHEN r.status = 'cancelled' OR m.id IS NULL THEN r.status ELSE m.status END AS status,
       coalesce(r.variant, c.ab_winner) AS variant,
       m.provider_kind AS provider, m.provider_message_id, m.error, m.sent_at,
       m.opened_at IS NOT NULL AS opened, m.clicked_at IS NOT NULL AS clicked
FROM campaign_recipients r
JOIN campaigns c ON c.id = r.campaign_id
LEFT JOIN messages m ON m.id = r.message_id
WHERE r.campaign_id = :campaign AND r.seq > :after
ORDER BY r.seq
LIMIT :limit
"""
)


async def recipients_page(conn: Conn, campaign_id: uuid.UUID, after: int, limit: int) -> Sequence[RowMapping]:
    """Recipients after sequence number `after`, in order."""
    params = {"campaign": campaign_id, "after": after, "limit": limit}
    return (await conn.execute(RECIPIENTS_SQL, params)).mappings().all()


LIST_ENGAGEMENT_SQL = text(
    f"""
SELECT c.campaign_id, {_COUNTS}
FROM campaign_counters c
WHERE c.campaign_id = ANY(:campaigns)
GROUP BY c.campaign_id
"""
)


async def list_engagement(conn: Conn, campaign_ids: list[uuid.UUID]) -> Sequence[RowMapping]:
    """(campaign_id, sent, unique_opens, unique_clicks, ...) of campaigns
    whose snapshot was taken, from their counters."""
    if not campaign_ids:
        return []
    return (await conn.execute(LIST_ENGAGEMENT_SQL, {"campaigns": campaign_ids})).mappings().all()


async def owned(conn: Conn, workspace_id: uuid.UUID, campaign_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Those of `campaign_ids` that belong to the workspace."""
    if not campaign_ids:
        return []
    stmt = select(campaigns.c.id).where(
        campaigns.c.workspace_id == workspace_id, campaigns.c.id.in_(campaign_ids)
    )
    return list((await conn.execute(stmt)).scalars())
