"""SQL of the send path (raw asyncpg), no explicit transactions. One
message: three statements. A batch (campaigns): one statement loads the
batch, one claims each group of messages about to be sent, one records a
group's outcomes with their `Email Sent` events. Claiming is a conditional
update (`queued` → `sending`), so two attempts can never both send a message.
An interrupted claim that reconciliation found missing at every provider
goes back to `queued` only if the row is still that claim (same
`updated_at`), then is claimed again like any queued message."""

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
       m.updated_at AS changed_at,
       extract(epoch FROM clock_timestamp() - m.updated_at)::float8 AS claim_age,
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

LOAD_MANY_SQL = LOAD_SQL.replace("m.id = $2", "m.id = ANY($2::uuid[])") + " ORDER BY m.id"

CLAIM_SQL = """
UPDATE messages SET status = 'sending', subject = $3, links = $4::jsonb, updated_at = now()
WHERE workspace_id = $1 AND id = $2 AND status = 'queued'
RETURNING id
"""

CLAIM_MANY_SQL = """
UPDATE messages m SET status = 'sending', subject = t.s, links = t.l, updated_at = now()
FROM json_to_recordset($2::text::json) AS t(i uuid, s text, l jsonb)
WHERE m.workspace_id = $1 AND m.id = t.i AND m.status = 'queued'
RETURNING m.id
"""

REQUEUE_SQL = """
UPDATE messages m SET status = 'queued', error = $4, updated_at = now()
FROM unnest($2::uuid[], $3::timestamptz[]) AS t(i, c)
WHERE m.workspace_id = $1 AND m.id = t.i AND m.status = 'sending' AND m.updated_at = t.c
RETURNING m.id
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

# Many outcomes (JSON recordset $2) in one statement: each message moves
# from its `f` status to `s`; those that became `sent` get their `Email
# Sent` event (and its outbox rows).
_RECORD_SENT_EVENTS = f"""SELECT u.ev, u.workspace_id, u.profile_id,
       '{EventType.SYSTEM}', '{SystemEvent.EMAIL_SENT}', u.pr, NULL::jsonb, now(), now(), u.k
FROM updated u WHERE u.s = 'sent' AND u.profile_id IS NOT NULL"""

RECORD_MANY_SQL = f"""
WITH t AS (
    SELECT * FROM json_to_recordset($2::text::json) AS t(
        i uuid, s text, e text, f text, pid uuid, pk text, pm text, a jsonb, ev uuid, k text, pr jsonb)
),
updated AS (
    UPDATE messages m
    SET status = t.s, error = t.e,
        provider_id = COALESCE(t.pid, m.provider_id), provider_kind = COALESCE(t.pk, m.provider_kind),
        provider_message_id = COALESCE(t.pm, m.provider_message_id),
        sent_at = CASE WHEN t.s = 'sent' THEN now() ELSE m.sent_at END,
        attempts = COALESCE(t.a, m.attempts), updated_at = now()
    FROM t
    WHERE m.workspace_id = $1 AND m.id = t.i AND m.status = t.f
    RETURNING m.workspace_id, m.profile_id, t.s, t.ev, t.k, t.pr
),
{event_writer.insert_cte("inserted", _RECORD_SENT_EVENTS)},
{event_writer.outbox_cte("announced", "inserted")}
SELECT count(*) FROM updated
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


async def requeue(
    conn: asyncpg.Connection,
    workspace_id: uuid.UUID,
    claims: list[tuple[uuid.UUID, datetime]],
    note: str,
) -> set[uuid.UUID]:
    """`sending` → `queued` for (message id, its `changed_at` when read)
    claims still unchanged; returns the ids moved."""
    if not claims:
        return set()
    ids, times = zip(*claims, strict=True)
    return {r[0] for r in await conn.fetch(REQUEUE_SQL, workspace_id, list(ids), list(times), note)}


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


async def load_many(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """`load` for many messages at once (the rows that exist)."""
    return await conn.fetch(LOAD_MANY_SQL, workspace_id, message_ids)


async def claim_many(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, claims: list[tuple[uuid.UUID, str, list[str]]]
) -> set[uuid.UUID]:
    """`claim` for (message id, subject, links) items; returns the ids claimed."""
    document = event_writer.to_json({"i": i, "s": s, "l": links} for i, s, links in claims)
    return {r[0] for r in await conn.fetch(CLAIM_MANY_SQL, workspace_id, document)}


async def record_many(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, outcomes: list[dict[str, Any]]
) -> int:
    """Record outcomes given as recordset rows (see RECORD_MANY_SQL); returns rows changed."""
    if not outcomes:
        return 0
    return await conn.fetchval(RECORD_MANY_SQL, workspace_id, event_writer.to_json(outcomes))
