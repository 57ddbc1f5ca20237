"""SQL of the send path (raw asyncpg): three statements a message, no
explicit transactions. Claiming a message is one conditional update
(`queued` → `sending`), so two attempts can never both send it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from core.ids import uuid7
from definitions.events import EventType, SystemEvent, email_event_key
from events import writer as event_writer

LOAD_SQL = """
SELECT m.id, m.workspace_id, m.status, m.email::text AS email, m.profile_id, m.template_id, m.campaign_id,
       m.data, m.error, m.provider_kind, m.provider_message_id, m.topic,
       (SELECT s.reason FROM suppressions s WHERE s.workspace_id = m.workspace_id AND s.email = m.email)
           AS suppressed_reason,
       (m.topic IS NOT NULL AND EXISTS (
           SELECT 1 FROM topic_optouts o
           WHERE o.workspace_id = m.workspace_id AND o.profile_id = m.profile_id AND o.topic_key = m.topic
       )) AS topic_opted_out,
       p.email::text AS profile_email, p.external_id AS profile_external_id, p.traits AS profile_traits
FROM messages m
LEFT JOIN profiles p ON p.id = m.profile_id AND p.workspace_id = m.workspace_id
WHERE m.workspace_id = $1 AND m.id = $2
"""

CLAIM_SQL = """
UPDATE messages SET status = 'sending', subject = $3, links = $4::jsonb, updated_at = now()
WHERE workspace_id = $1 AND id = $2 AND status = 'queued'
RETURNING id
"""

SET_STATUS_SQL = """
UPDATE messages SET status = $3, error = $4, attempts = COALESCE($5::jsonb, attempts), updated_at = now()
WHERE workspace_id = $1 AND id = $2 AND status = ANY($6::text[])
"""

# The delivery, its `Email Sent` event and that event's outbox rows in one
# statement (events/writer.py builds the event CTEs).
_SENT_EVENT = f"""SELECT $10::uuid, u.workspace_id, u.profile_id,
       '{EventType.SYSTEM}', '{SystemEvent.EMAIL_SENT}', $8::jsonb, NULL::jsonb, $6, now(), $9
FROM updated u WHERE u.profile_id IS NOT NULL"""

SENT_SQL = f"""
WITH updated AS (
    UPDATE messages
    SET status = 'sent', error = NULL, provider_id = $3, provider_kind = $4, provider_message_id = $5,
        sent_at = $6, attempts = $7::jsonb, updated_at = now()
    WHERE workspace_id = $1 AND id = $2
    RETURNING workspace_id, profile_id
),
{event_writer.insert_cte("inserted", _SENT_EVENT)},
{event_writer.outbox_cte("announced", "inserted")}
SELECT count(*) FROM inserted
"""


async def load(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, message_id: uuid.UUID
) -> asyncpg.Record | None:
    """The message with its suppression reason, whether its person left its
    topic, and its profile."""
    return await conn.fetchrow(LOAD_SQL, workspace_id, message_id)


async def claim(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, message_id: uuid.UUID, subject: str, links: list[str]
) -> bool:
    """`queued` → `sending`; False when another attempt got there first."""
    return await conn.fetchval(CLAIM_SQL, workspace_id, message_id, subject, links) is not None


async def set_status(
    conn: asyncpg.Connection,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    status: str,
    error: str | None,
    *,
    attempts: list[dict[str, Any]] | None = None,
    only_from: tuple[str, ...] = ("queued", "sending"),
) -> None:
    """Move a message from one of `only_from` to `status`."""
    await conn.execute(SET_STATUS_SQL, workspace_id, message_id, status, error, attempts, list(only_from))


async def sent(
    conn: asyncpg.Connection,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    provider_id: uuid.UUID,
    provider_kind: str,
    provider_message_id: str,
    sent_at: datetime,
    attempts: list[dict[str, Any]],
    event_properties: dict[str, Any],
) -> None:
    """Record the delivery and its `Email Sent` event in one statement."""
    await conn.fetchval(
        SENT_SQL,
        workspace_id,
        message_id,
        provider_id,
        provider_kind,
        provider_message_id,
        sent_at,
        attempts,
        event_properties,
        email_event_key(message_id, "sent"),
        uuid7(),
    )
