"""Small read helpers for assertions against the real database."""

from __future__ import annotations

import uuid

from sqlalchemy import text


async def count(engine, sql: str, **params) -> int:
    """Run a COUNT query."""
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def events_of(engine, workspace_id: uuid.UUID) -> list[dict]:
    """Every event of a workspace, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT e.*, p.external_id, p.email "
                "FROM events e LEFT JOIN profiles p ON p.id = e.profile_id "
                "WHERE e.workspace_id = :ws ORDER BY e.occurred_at, e.message_id"
            ),
            {"ws": workspace_id},
        )
        return [dict(r) for r in rows.mappings()]


async def profiles_of(engine, workspace_id: uuid.UUID) -> list[dict]:
    """Every profile of a workspace."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM profiles WHERE workspace_id = :ws ORDER BY id"), {"ws": workspace_id}
        )
        return [dict(r) for r in rows.mappings()]
