"""SQL for workspaces and API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.tables import api_keys, workspaces


@dataclass(frozen=True, slots=True)
class KeyRow:
    """An active key as authentication needs it."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    kind: str
    # The workspace's `allowed_origins` setting: browser origins that may
    # send tracking calls with this key (None or empty: any origin).
    allowed_origins: frozenset[str] | None = None


async def get_or_create_workspace(session: AsyncSession, workspace_id: uuid.UUID, name: str) -> uuid.UUID:
    """The id of the workspace called `name`, creating it with `workspace_id`."""
    stmt = (
        insert(workspaces)
        .values(id=workspace_id, name=name)
        .on_conflict_do_update(index_elements=[workspaces.c.name], set_={"name": name})
        .returning(workspaces.c.id)
    )
    return (await session.execute(stmt)).scalar_one()


async def insert_key(
    session: AsyncSession,
    *,
    key_id: uuid.UUID,
    workspace_id: uuid.UUID,
    kind: str,
    prefix: str,
    key_hash: str,
) -> None:
    """Store a key's hash (never the key)."""
    await session.execute(
        api_keys.insert().values(
            id=key_id, workspace_id=workspace_id, kind=kind, prefix=prefix, key_hash=key_hash
        )
    )


async def find_active_key(conn: AsyncConnection, key_hash: str) -> KeyRow | None:
    """An unrevoked key by hash (a read: unknown keys cost no write)."""
    stmt = (
        select(
            api_keys.c.id,
            api_keys.c.workspace_id,
            api_keys.c.kind,
            workspaces.c.settings["allowed_origins"].label("origins"),
        )
        .join(workspaces, workspaces.c.id == api_keys.c.workspace_id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    origins = row.origins if isinstance(row.origins, list) else None
    return KeyRow(row.id, row.workspace_id, row.kind, frozenset(origins) if origins else None)


async def touch_key(conn: AsyncConnection, key_id: uuid.UUID, every_seconds: float) -> None:
    """Record that a key was used, unless that was recorded within `every_seconds`
    (by any process)."""
    stale = func.now() - timedelta(seconds=every_seconds)
    await conn.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < stale),
        )
        .values(last_used_at=func.now())
    )


async def workspace_name(session: AsyncSession, workspace_id: uuid.UUID) -> str | None:
    """A workspace's name, or None."""
    return (await session.execute(select(workspaces.c.name).where(workspaces.c.id == workspace_id))).scalar()


async def get_settings(session: AsyncSession, workspace_id: uuid.UUID) -> dict:
    """A workspace's settings document."""
    stmt = select(workspaces.c.settings).where(workspaces.c.id == workspace_id)
    return (await session.execute(stmt)).scalar_one()


async def merge_settings(session: AsyncSession, workspace_id: uuid.UUID, values: dict) -> dict:
    """Merge values into the settings document; returns the result."""
    stmt = (
        update(workspaces)
        .where(workspaces.c.id == workspace_id)
        .values(settings=workspaces.c.settings.op("||")(cast(values, JSONB)))
        .returning(workspaces.c.settings)
    )
    return (await session.execute(stmt)).scalar_one()
