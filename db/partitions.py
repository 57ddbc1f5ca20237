"""SQL for `events` partition maintenance (the work itself is the
`mp_ensure_event_partition` function created by migration 0001)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def list_month_partitions(conn: AsyncConnection) -> list[str]:
    """Names of the monthly partitions of `events`."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass AND c.relname <> 'events_default' ORDER BY 1"
        )
    )
    return [r[0] for r in rows]


async def months_in_default(conn: AsyncConnection, earliest: date, latest: date) -> list[date]:
    """Months (first days, UTC) that have rows in the default partition."""
    rows = await conn.execute(
        text(
            "SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS m "
            "FROM events_default WHERE occurred_at >= :earliest AND occurred_at < :latest ORDER BY m"
        ),
        {"earliest": earliest, "latest": latest},
    )
    return [r[0] for r in rows]


async def ensure_month(conn: AsyncConnection, month: date) -> str | None:
    """Create one month's partition; returns its name, or None if it existed."""
    return (await conn.execute(text("SELECT mp_ensure_event_partition(:m)"), {"m": month})).scalar()
