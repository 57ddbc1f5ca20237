"""SQL for templates, providers, suppressions, messages and email events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.ids import uuid7_floor
from db.engine import driver_connection
from db.tables import events, messages, profiles, providers, suppressions, templates
from definitions.events import EMAIL_EVENT_PREFIX
from events import writer as event_writer
from events.writer import EventRow

Conn = AsyncSession | AsyncConnection

TEMPLATE_COLUMNS = (
    templates.c.id,
    templates.c.name,
    templates.c.subject,
    templates.c.html,
    templates.c.text,
    templates.c.from_name,
    templates.c.from_email,
    templates.c.reply_to,
    templates.c.created_at,
    templates.c.updated_at,
)
PROVIDER_COLUMNS = (
    providers.c.id,
    providers.c.name,
    providers.c.kind,
    providers.c.priority,
    providers.c.rate_limit,
    providers.c.enabled,
    providers.c.settings,
    providers.c.secrets,
    providers.c.created_at,
    providers.c.updated_at,
)
MESSAGE_COLUMNS = (
    *(c for c in messages.c if c.name not in ("links", "attempts", "data")),
    messages.c.attempts,
)


async def enabled_providers(conn: Conn, workspace_id: uuid.UUID) -> Sequence[RowMapping]:
    """The workspace's enabled providers with their secrets (for sending only)."""
    stmt = select(*PROVIDER_COLUMNS).where(
        providers.c.workspace_id == workspace_id, providers.c.enabled.is_(True)
    )
    return (await conn.execute(stmt.order_by(providers.c.priority, providers.c.name))).mappings().all()


async def providers_by_priority(conn: Conn, workspace_id: uuid.UUID) -> Sequence[RowMapping]:
    """Every provider of the workspace in routing order, without secrets or settings."""
    stmt = select(
        providers.c.id,
        providers.c.name,
        providers.c.kind,
        providers.c.priority,
        providers.c.rate_limit,
        providers.c.enabled,
    ).where(providers.c.workspace_id == workspace_id)
    return (await conn.execute(stmt.order_by(providers.c.priority, providers.c.name))).mappings().all()


async def message_outcomes_since(
    conn: Conn, workspace_id: uuid.UUID, since: datetime
) -> dict[uuid.UUID, tuple[int, int]]:
    """provider id → (sent, failed) among messages created since `since`
    (an id range: message ids are UUIDv7)."""
    m = messages
    stmt = (
        select(
            m.c.provider_id,
            func.count().filter(m.c.sent_at.is_not(None)),
            func.count().filter(m.c.status == "failed"),
        )
        .where(m.c.workspace_id == workspace_id, m.c.id >= uuid7_floor(since), m.c.provider_id.is_not(None))
        .group_by(m.c.provider_id)
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in (await conn.execute(stmt)).all()}


async def profile_messages(
    conn: Conn, workspace_id: uuid.UUID, profile_id: uuid.UUID, limit: int
) -> Sequence[RowMapping]:
    """A profile's latest messages (index `messages_profile_idx`)."""
    stmt = (
        select(
            messages.c.id,
            messages.c.subject,
            messages.c.status,
            messages.c.provider_kind,
            messages.c.flow_id,
            messages.c.campaign_id,
            messages.c.created_at,
            messages.c.sent_at,
            messages.c.opened_at,
            messages.c.clicked_at,
        )
        .where(messages.c.workspace_id == workspace_id, messages.c.profile_id == profile_id)
        .order_by(messages.c.id.desc())
        .limit(limit)
    )
    return (await conn.execute(stmt)).mappings().all()


async def provider_by_id(conn: Conn, provider_id: uuid.UUID) -> RowMapping | None:
    """A provider of any workspace (webhooks identify it by the URL)."""
    stmt = select(providers.c.workspace_id, *PROVIDER_COLUMNS).where(providers.c.id == provider_id)
    return (await conn.execute(stmt)).mappings().first()


async def all_provider_secrets(conn: Conn) -> Sequence[RowMapping]:
    """Every provider's id and stored secrets, locked (key rotation)."""
    stmt = select(providers.c.id, providers.c.secrets).order_by(providers.c.id).with_for_update()
    return (await conn.execute(stmt)).mappings().all()


async def set_provider_secrets(conn: Conn, provider_id: uuid.UUID, secrets: dict[str, str]) -> None:
    """Replace a provider's stored secrets without touching `updated_at`
    (a rotation is not a configuration change)."""
    await conn.execute(update(providers).where(providers.c.id == provider_id).values(secrets=secrets))


# -- suppressions -----------------------------------------------------------


async def suppression_page(
    conn: Conn, workspace_id: uuid.UUID, after: str | None, limit: int
) -> Sequence[RowMapping]:
    """By email."""
    stmt = select(
        suppressions.c.email, suppressions.c.reason, suppressions.c.detail, suppressions.c.created_at
    ).where(suppressions.c.workspace_id == workspace_id)
    if after is not None:
        stmt = stmt.where(suppressions.c.email > after)
    return (await conn.execute(stmt.order_by(suppressions.c.email).limit(limit))).mappings().all()


async def get_suppression(conn: Conn, workspace_id: uuid.UUID, email: str) -> RowMapping | None:
    """One suppression."""
    stmt = select(
        suppressions.c.email, suppressions.c.reason, suppressions.c.detail, suppressions.c.created_at
    ).where(suppressions.c.workspace_id == workspace_id, suppressions.c.email == email)
    return (await conn.execute(stmt)).mappings().first()


async def suppress(
    conn: Conn, workspace_id: uuid.UUID, email: str, reason: str, detail: str | None = None
) -> bool:
    """Suppress an address (the first reason is kept); True when new."""
    stmt = (
        pg_insert(suppressions)
        .values(workspace_id=workspace_id, email=email, reason=reason, detail=detail)
        .on_conflict_do_nothing()
        .returning(suppressions.c.email)
    )
    return (await conn.execute(stmt)).first() is not None


async def unsuppress(conn: Conn, workspace_id: uuid.UUID, email: str) -> int:
    """Remove a suppression; returns rows removed."""
    stmt = delete(suppressions).where(
        suppressions.c.workspace_id == workspace_id, suppressions.c.email == email
    )
    return (await conn.execute(stmt)).rowcount


async def create_message(conn: Conn, values: dict[str, Any]) -> tuple[RowMapping, bool]:
    """Insert a message unless its idempotency key exists; returns the row
    and whether it was new."""
    stmt = pg_insert(messages).values(**values).on_conflict_do_nothing().returning(messages.c.id)
    created = (await conn.execute(stmt)).first() is not None
    existing = select(messages).where(
        messages.c.workspace_id == values["workspace_id"],
        messages.c.idempotency_key == values["idempotency_key"],
    )
    return (await conn.execute(existing)).mappings().one(), created


async def message(conn: Conn, workspace_id: uuid.UUID, message_id: uuid.UUID) -> RowMapping | None:
    """A message row."""
    stmt = select(messages).where(messages.c.workspace_id == workspace_id, messages.c.id == message_id)
    return (await conn.execute(stmt)).mappings().first()


async def message_by_id(conn: Conn, message_id: uuid.UUID) -> RowMapping | None:
    """A message of any workspace (tracking links carry only the id)."""
    return (await conn.execute(select(messages).where(messages.c.id == message_id))).mappings().first()


async def message_by_provider_id(
    conn: Conn, workspace_id: uuid.UUID, kind: str, provider_message_id: str
) -> RowMapping | None:
    """The workspace's message a provider knows by its own id (a webhook
    may only reach its own provider's workspace). None when the id names
    several: a SendGrid batch request has one id for all its messages
    (their events carry `mp_message_id`, which tells them apart)."""
    stmt = select(messages).where(
        messages.c.workspace_id == workspace_id,
        messages.c.provider_kind == kind,
        messages.c.provider_message_id == provider_message_id,
    )
    found = (await conn.execute(stmt.limit(2))).mappings().all()
    return found[0] if len(found) == 1 else None


async def mark_first(conn: Conn, message_id: uuid.UUID, column: str, at: datetime) -> None:
    """Set a timestamp column of a message if it is still empty."""
    col = messages.c[column]
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, col.is_(None))
        .values({column: at, "updated_at": func.now()})
    )


async def set_status_if(
    conn: Conn, message_id: uuid.UUID, status: str, only_from: Sequence[str], **values: Any
) -> None:
    """Move a message to `status` when it is in one of `only_from`."""
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.status.in_(only_from))
        .values(status=status, updated_at=func.now(), **values)
    )


async def message_events(
    conn: Conn, workspace_id: uuid.UUID, message_id: uuid.UUID, profile_id: uuid.UUID | None
) -> Sequence[RowMapping]:
    """The `Email …` events of a message."""
    if profile_id is None:
        return []
    stmt = (
        select(events.c.name, events.c.properties, events.c.occurred_at)
        .where(
            events.c.workspace_id == workspace_id,
            events.c.profile_id == profile_id,
            events.c.name.startswith(EMAIL_EVENT_PREFIX),
            events.c.properties["message_id"].astext == str(message_id),
        )
        .order_by(events.c.occurred_at)
    )
    return (await conn.execute(stmt)).mappings().all()


# -- profiles and events ------------------------------------------------------


async def profile_for_send(conn: Conn, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> RowMapping | None:
    """A profile's identity and traits."""
    stmt = select(profiles.c.id, profiles.c.email, profiles.c.external_id, profiles.c.traits).where(
        profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
    )
    return (await conn.execute(stmt)).mappings().first()


async def profile_by_email(conn: Conn, workspace_id: uuid.UUID, email: str, new_id: uuid.UUID) -> RowMapping:
    """The profile holding an email, created when there is none."""
    await conn.execute(
        pg_insert(profiles).values(id=new_id, workspace_id=workspace_id, email=email).on_conflict_do_nothing()
    )
    stmt = select(profiles.c.id, profiles.c.email, profiles.c.external_id, profiles.c.traits).where(
        profiles.c.workspace_id == workspace_id, profiles.c.email == email
    )
    return (await conn.execute(stmt)).mappings().one()


async def write_event(
    conn: Conn,
    workspace_id: uuid.UUID,
    profile_id: uuid.UUID,
    name: str,
    properties: dict[str, Any],
    occurred_at: datetime,
    message_id: str,
) -> bool:
    """Write an `Email …` event once per key (events/writer.py `write_once`).
    Returns False if it existed."""
    row = EventRow(
        workspace_id=workspace_id,
        profile_id=profile_id,
        name=name,
        properties=properties,
        occurred_at=occurred_at,
        message_id=message_id,
        received_at=datetime.now(UTC),
    )
    return await event_writer.write_once(await driver_connection(conn), row)


async def link_to_flow(
    conn: Conn, workspace_id: uuid.UUID, message_id: uuid.UUID, values: dict[str, Any]
) -> None:
    """Record which flow, version, node and enrollment a message belongs to."""
    await conn.execute(
        update(messages)
        .where(messages.c.workspace_id == workspace_id, messages.c.id == message_id)
        .values(**values)
    )
