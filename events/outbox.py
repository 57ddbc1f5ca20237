"""SQL of the outbox: claim rows for dispatch, delete them once handed to
Temporal, push failed ones back with a delay.

A claim is a lease (`claimed_until`), committed at once: the dispatcher
never holds a transaction open while it talks to Temporal. Rows whose
lease ran out — their dispatcher died, or Temporal refused them — are
taken again by the sweep; consumers drop event ids they have already seen,
so a row dispatched twice has its effect once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_CLAIM_SQL = """
UPDATE outbox o
SET claimed_until = now() + make_interval(secs => :lease), attempts = o.attempts + 1
FROM (
    SELECT id FROM outbox WHERE {where} AND consumer = ANY(:consumers)
    ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
) c
WHERE o.id = c.id
RETURNING o.id, o.workspace_id, o.consumer, o.profile_id, o.event_id, o.event_name, o.attempts,
          o.occurred_at, o.message_id
"""
CLAIM_NEW_SQL = text(_CLAIM_SQL.format(where="claimed_until IS NULL"))
CLAIM_EXPIRED_SQL = text(_CLAIM_SQL.format(where="claimed_until < now()"))
DELETE_SQL = text("DELETE FROM outbox WHERE id = ANY(:ids)")
# Backoff for rows Temporal refused: 2^attempts seconds, at most 10 minutes.
DELAY_SQL = text(
    """
    UPDATE outbox SET claimed_until = now() + make_interval(secs => LEAST(600, power(2, LEAST(attempts, 10))))
    WHERE id = ANY(:ids)
    """
)
BACKLOG_SQL = text(
    "SELECT count(*) FILTER (WHERE claimed_until IS NULL), "
    "count(*) FILTER (WHERE claimed_until IS NOT NULL), min(created_at) FROM outbox"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed delivery."""

    id: int
    workspace_id: uuid.UUID
    consumer: str
    profile_id: uuid.UUID
    event_id: uuid.UUID
    event_name: str | None
    attempts: int
    occurred_at: datetime | None = None
    message_id: str | None = None


async def claim(
    engine: AsyncEngine, consumers: Sequence[str], limit: int, lease_seconds: float, *, expired: bool
) -> list[OutboxRow]:
    """Lease up to `limit` rows of these consumers: new ones, or (`expired`)
    those whose lease ran out. Several dispatchers never claim the same row
    (SKIP LOCKED); rows of a consumer this dispatcher does not run are left
    for one that does."""
    async with engine.begin() as conn:
        rows = await conn.execute(
            CLAIM_EXPIRED_SQL if expired else CLAIM_NEW_SQL,
            {"limit": limit, "lease": lease_seconds, "consumers": list(consumers)},
        )
        return sorted((OutboxRow(*r) for r in rows), key=lambda r: r.id)


async def delete(engine: AsyncEngine, ids: Sequence[int]) -> None:
    """Forget rows that were handed over."""
    if ids:
        async with engine.begin() as conn:
            await conn.execute(DELETE_SQL, {"ids": list(ids)})


async def delay(engine: AsyncEngine, ids: Sequence[int]) -> None:
    """Leave rows for a later sweep, later the more often they failed."""
    if ids:
        async with engine.begin() as conn:
            await conn.execute(DELAY_SQL, {"ids": list(ids)})


async def backlog(engine: AsyncEngine) -> tuple[int, int, object]:
    """(unclaimed rows, claimed rows, oldest row's time) for status output."""
    async with engine.connect() as conn:
        row = (await conn.execute(BACKLOG_SQL)).one()
    return row[0], row[1], row[2]
