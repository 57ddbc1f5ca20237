"""Queries every CRUD domain shares, written once over any table keyed by
`workspace_id` and a time-ordered `id` (segments, templates, providers):
a page newest first, one row, insert, update, delete, and the name check."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import RowMapping, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.pagination import cut_page, decode_cursor

T = TypeVar("T")

Conn = AsyncSession | AsyncConnection


async def name_taken(
    conn: Conn,
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


async def page(
    conn: Conn,
    table: Any,
    columns: Sequence[Any],
    workspace_id: uuid.UUID,
    after: uuid.UUID | None,
    limit: int,
    where: Sequence[Any] = (),
) -> Sequence[RowMapping]:
    """Newest first by id (of the rows meeting the `where` conditions)."""
    stmt = select(*columns).where(table.c.workspace_id == workspace_id, *where)
    if after is not None:
        stmt = stmt.where(table.c.id < after)
    return (await conn.execute(stmt.order_by(table.c.id.desc()).limit(limit))).mappings().all()


async def newest_page(
    conn: Conn,
    table: Any,
    columns: Sequence[Any],
    workspace_id: uuid.UUID,
    cursor: str | None,
    limit: int,
    to_item: Callable[[Any], T],
    where: Sequence[Any] = (),
) -> tuple[list[T], str | None]:
    """One page of a list endpoint, newest first: the items and the cursor
    of the next page (None on the last)."""
    rows = await page(conn, table, columns, workspace_id, decode_cursor(cursor), limit + 1, where)
    return cut_page(rows, limit, to_item)


async def get(
    conn: Conn, table: Any, columns: Sequence[Any], workspace_id: uuid.UUID, row_id: uuid.UUID
) -> RowMapping | None:
    """One row of the workspace, or None."""
    stmt = select(*columns).where(table.c.workspace_id == workspace_id, table.c.id == row_id)
    return (await conn.execute(stmt)).mappings().first()


async def insert_row(conn: Conn, table: Any, columns: Sequence[Any], values: dict[str, Any]) -> RowMapping:
    """Insert and return the row."""
    return (await conn.execute(table.insert().values(**values).returning(*columns))).mappings().one()


async def update_row(
    conn: Conn,
    table: Any,
    columns: Sequence[Any],
    workspace_id: uuid.UUID,
    row_id: uuid.UUID,
    values: dict[str, Any],
) -> RowMapping | None:
    """Update and return the row (None when absent)."""
    stmt = (
        update(table)
        .where(table.c.workspace_id == workspace_id, table.c.id == row_id)
        .values(**values, updated_at=func.now())
        .returning(*columns)
    )
    return (await conn.execute(stmt)).mappings().first()


async def delete_row(conn: Conn, table: Any, workspace_id: uuid.UUID, row_id: uuid.UUID) -> int:
    """Delete; returns rows deleted."""
    stmt = delete(table).where(table.c.workspace_id == workspace_id, table.c.id == row_id)
    return (await conn.execute(stmt)).rowcount
