"""Queries every CRUD domain shares, written once over any table that has
`workspace_id`, `id` and `name` columns (segments, templates, providers)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


async def name_taken(
    conn: AsyncSession | AsyncConnection,
    table: Any,
    workspace_id: uuid.UUID,
    name: str,
    exclude: uuid.UUID | None = None,
) -> bool:
    """Whether a row of the workspace other than `exclude` has this name."""
    stmt = select(table.c.id).where(table.c.workspace_id == workspace_id, table.c.name == name)
    if exclude is not None:
        stmt = stmt.where(table.c.id != exclude)
    return (await conn.execute(stmt.limit(1))).first() is not None
