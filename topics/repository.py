"""SQL for topics and topic opt-outs: CRUD, a person's choices, the
preference page, profile merges, and the audience filter of sends."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, RowMapping, delete, exists, func, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.ids import uuid7
from db.engine import driver_connection
from db.tables import profiles, topic_optouts, topics
from definitions.events import SystemEvent, topic_event_key
from events import writer as event_writer
from events.writer import EventRow

Conn = AsyncSession | AsyncConnection

TOPIC_COLUMNS = (
    topics.c.id,
    topics.c.key,
    topics.c.name,
    topics.c.description,
    topics.c.created_at,
    topics.c.updated_at,
)


async def topic_by_key(conn: Conn, workspace_id: uuid.UUID, key: str) -> RowMapping | None:
    """One topic of the workspace, or None."""
    stmt = select(*TOPIC_COLUMNS).where(topics.c.workspace_id == workspace_id, topics.c.key == key)
    return (await conn.execute(stmt)).mappings().first()


async def key_taken(conn: Conn, workspace_id: uuid.UUID, key: str) -> bool:
    """Whether the workspace has a topic with this key."""
    return await topic_by_key(conn, workspace_id, key) is not None


async def existing_keys(conn: Conn, workspace_id: uuid.UUID, keys: set[str]) -> set[str]:
    """Which of `keys` are topics of the workspace."""
    if not keys:
        return set()
    stmt = select(topics.c.key).where(topics.c.workspace_id == workspace_id, topics.c.key.in_(sorted(keys)))
    return set((await conn.execute(stmt)).scalars())


async def update_topic(
    conn: Conn, workspace_id: uuid.UUID, key: str, values: dict[str, Any]
) -> RowMapping | None:
    """Change name / description; None when there is no such topic."""
    stmt = (
        update(topics)
        .where(topics.c.workspace_id == workspace_id, topics.c.key == key)
        .values(**values, updated_at=func.now())
        .returning(*TOPIC_COLUMNS)
    )
    return (await conn.execute(stmt)).mappings().first()


async def delete_topic(conn: Conn, workspace_id: uuid.UUID, key: str) -> int:
    """Delete a topic (people's opt-outs of its key are kept); rows deleted."""
    stmt = delete(topics).where(topics.c.workspace_id == workspace_id, topics.c.key == key)
    return (await conn.execute(stmt)).rowcount


# What still sends under a topic: campaigns not yet ended, and flows not
# archived whose current version has a send_email node tagged with it.
USERS_SQL = text(
    """
(SELECT 'campaign' AS kind, c.name FROM campaigns c
 WHERE c.workspace_id = :w AND c.topic = :k AND c.status IN ('draft', 'scheduled', 'sending', 'paused')
 ORDER BY c.name LIMIT :n)
UNION ALL
(SELECT 'flow' AS kind, f.name FROM flows f
 JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version
 WHERE f.workspace_id = :w AND f.status <> 'archived'
   AND v.definition -> 'nodes' @> jsonb_build_array(jsonb_build_object('type', 'send_email', 'topic', :k))
 ORDER BY f.name LIMIT :n)
"""
)


async def topic_users(conn: Conn, workspace_id: uuid.UUID, key: str, limit: int = 5) -> list[tuple[str, str]]:
    """(kind, name) of campaigns and flows that still send under the topic, a few of each."""
    rows = await conn.execute(USERS_SQL, {"w": workspace_id, "k": key, "n": limit})
    return [(r[0], r[1]) for r in rows]


async def workspace_topics(conn: Conn, workspace_id: uuid.UUID, limit: int = 200) -> Sequence[RowMapping]:
    """The workspace's topics by name (the preference page lists them)."""
    stmt = (
        select(*TOPIC_COLUMNS)
        .where(topics.c.workspace_id == workspace_id)
        .order_by(topics.c.name, topics.c.key)
        .limit(limit)
    )
    return (await conn.execute(stmt)).mappings().all()


async def opted_out(conn: Conn, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> list[str]:
    """The keys of the topics a person left, sorted."""
    o = topic_optouts
    stmt = (
        select(o.c.topic_key)
        .where(o.c.workspace_id == workspace_id, o.c.profile_id == profile_id)
        .order_by(o.c.topic_key)
    )
    return list((await conn.execute(stmt)).scalars())


async def lock_profile(
    conn: Conn, workspace_id: uuid.UUID, profile_id: uuid.UUID, *, lock: bool = True
) -> bool:
    """Whether the profile exists; with `lock`, hold it (FOR KEY SHARE: an
    erasure or merge waits for this transaction, other writers do not)."""
    stmt = select(profiles.c.id).where(profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id)
    if lock:
        stmt = stmt.with_for_update(read=True, key_share=True)
    return (await conn.execute(stmt)).first() is not None


async def set_choice(
    conn: Conn,
    workspace_id: uuid.UUID,
    profile_id: uuid.UUID,
    key: str,
    subscribed: bool,
    properties: dict[str, Any],
) -> bool:
    """Record a person's choice about a topic; when it changed, write
    `Topic Unsubscribed` / `Topic Resubscribed` (with `topic` and
    `properties`) through the event writer, so segments re-check and flows
    can trigger. True when it changed. The caller holds the profile
    (`lock_profile`)."""
    o = topic_optouts
    if subscribed:
        stmt = (
            delete(o)
            .where(o.c.workspace_id == workspace_id, o.c.profile_id == profile_id, o.c.topic_key == key)
            .returning(o.c.topic_key)
        )
    else:
        stmt = (
            pg_insert(o)
            .values(workspace_id=workspace_id, profile_id=profile_id, topic_key=key)
            .on_conflict_do_nothing()
            .returning(o.c.topic_key)
        )
    if (await conn.execute(stmt)).first() is None:
        return False
    change_id = uuid7()
    name = SystemEvent.TOPIC_RESUBSCRIBED if subscribed else SystemEvent.TOPIC_UNSUBSCRIBED
    now = datetime.now(UTC)
    row = EventRow(
        workspace_id=workspace_id,
        profile_id=profile_id,
        name=name.value,
        properties={"topic": key, **properties},
        occurred_at=now,
        received_at=now,
        message_id=topic_event_key(profile_id, key, subscribed, change_id),
        id=change_id,
    )
    await event_writer.write(await driver_connection(conn), [row])
    return True


# A merged profile's opt-outs go to the profile it merges into: a topic left
# under either identity stays left.
MOVE_OPTOUTS_SQL = """
WITH moved AS (
    DELETE FROM topic_optouts WHERE workspace_id = $1 AND profile_id = $2
    RETURNING topic_key, created_at
)
INSERT INTO topic_optouts (workspace_id, profile_id, topic_key, created_at)
SELECT $1, $3, topic_key, created_at FROM moved
ON CONFLICT DO NOTHING
"""


async def follow_merge(conn: asyncpg.Connection, ws: uuid.UUID, source: uuid.UUID, target: uuid.UUID) -> None:
    """Move a merged profile's opt-outs to the surviving profile."""
    await conn.execute(MOVE_OPTOUTS_SQL, ws, source, target)


def receives_topic(
    workspace_id: Any, profile_id: ColumnElement[Any], topic: str | None
) -> ColumnElement[bool]:
    """The audience filter of a send with a topic: true for the people who
    have not left `topic` (always true when `topic` is None). Use it in the
    WHERE of a snapshot, e.g. a campaign's

        select(...).where(..., receives_topic(workspace_id, profiles.c.id, campaign.topic))

    It compiles to `NOT EXISTS (SELECT 1 FROM topic_optouts o WHERE
    o.workspace_id = :w AND o.profile_id = <profile_id> AND o.topic_key =
    :topic)`, one probe of the opt-outs' primary key per person."""
    if topic is None:
        return true()
    o = topic_optouts.alias("topic_optout")
    return ~exists().where(
        o.c.workspace_id == workspace_id, o.c.profile_id == profile_id, o.c.topic_key == topic
    )
