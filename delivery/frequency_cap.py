"""The frequency cap, in one place: at most N marketing emails (flow and
campaign sends, `messages.marketing`; transactional and API messages are
exempt) per person per period.

Who counts: a person's marketing messages created within the period that
were not suppressed, failed or cancelled (queued ones count: they are
about to go). Flows check one person at a time (`recent_marketing`, the
flow's own cap, else the workspace's); campaigns check a batch at a time
(`cap_recipients`, the workspace's cap unless the campaign opts out).
Both hold the person's cap lock (a transaction-scoped advisory lock) from
the count until their new message row commits, so two sends cannot both
take a person's last slot."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from definitions.flows import FrequencyCap

Conn = AsyncSession | AsyncConnection

# The one rule of what counts (messages `m` of person `:p` or `r.profile_id`).
_COUNTED = (
    "m.workspace_id = :w AND m.marketing AND m.created_at > now() - make_interval(secs => :s) "
    "AND m.status NOT IN ('suppressed', 'failed', 'cancelled')"
)


async def workspace_cap(conn: Conn, workspace_id: uuid.UUID) -> FrequencyCap | None:
    """The workspace's cap setting (`settings.frequency_cap`), if any."""
    row = (
        await conn.execute(
            text(
                "SELECT CAST(settings #>> '{frequency_cap,max_emails}' AS integer), "
                "CAST(settings #>> '{frequency_cap,period_seconds}' AS integer) FROM workspaces WHERE id = :w"
            ),
            {"w": workspace_id},
        )
    ).first()
    if row is None or row[0] is None or row[1] is None:
        return None
    return FrequencyCap(max_emails=row[0], period_seconds=row[1])


async def recent_marketing(
    conn: Conn, workspace_id: uuid.UUID, profile_id: uuid.UUID, period_seconds: int
) -> list[datetime]:
    """Creation times of the person's counted messages within the period
    (oldest first), holding the person's cap lock until commit."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('cap:' || :p))"), {"p": str(profile_id)})
    result = await conn.execute(
        text(
            f"SELECT m.created_at FROM messages m WHERE {_COUNTED} AND m.profile_id = :p "
            "ORDER BY m.created_at"
        ),
        {"w": workspace_id, "p": profile_id, "s": float(period_seconds)},
    )
    return [r[0] for r in result]


# A campaign batch's people still to be given a message: their cap locks
# (in one order, so two batches never deadlock), then those at the cap are
# marked `capped` and get no message.
_LOCK_BATCH_SQL = text(
    """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtext('cap:' || r.profile_id::text) AS k
    FROM campaign_recipients r
    WHERE r.campaign_id = :campaign AND r.seq BETWEEN :first AND :last AND r.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id)
    ORDER BY k
) keys
"""
)
_CAP_BATCH_SQL = text(
    f"""
UPDATE campaign_recipients r SET status = 'capped'
WHERE r.campaign_id = :campaign AND r.seq BETWEEN :first AND :last AND r.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id)
  AND (SELECT count(*) FROM messages m WHERE {_COUNTED} AND m.profile_id = r.profile_id) >= :max
"""
)


async def cap_recipients(
    conn: Conn,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    first_seq: int,
    last_seq: int,
    cap: FrequencyCap,
) -> int:
    """Mark the campaign's recipients `first_seq`..`last_seq` who have no
    message yet and are at the cap `capped`; returns how many. The caller
    creates the others' messages in the same transaction."""
    params: dict[str, Any] = {"campaign": campaign_id, "first": first_seq, "last": last_seq}
    await conn.execute(_LOCK_BATCH_SQL, params)
    params |= {"w": workspace_id, "s": float(cap.period_seconds), "max": cap.max_emails}
    return (await conn.execute(_CAP_BATCH_SQL, params)).rowcount
