"""SQL of the outbox: claim rows for dispatch, delete them once handed to
Temporal, push failed ones back with a delay.

A row announces several events to one consumer (the events one statement
wrote, as arrays); `claim` hands the consumer one `OutboxRow` per event,
and a row is deleted or delayed as a whole.

A claim is a lease (`claimed_until`), committed at once: the dispatcher
never holds a transaction open while it talks to Temporal. Rows whose
lease ran out — their dispatcher died, or Temporal refused them — are
taken again by the sweep; consumers drop event ids they have already seen,
so a row dispatched twice has its effect once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Locks up to :limit rows in id order, then claims those that start
# before :limit events (at least one row, however large): a claim is
# bounded in events, whatever the rows' sizes. Rows locked but not claimed
# are released when the claim commits, for the next pass.
_CLAIM_SQL = """
UPDATE outbox o
SET claimed_until = now() + make_interval(secs => :lease), attempts = o.attempts + 1
FROM (
    SELECT id, sum(size) OVER (ORDER BY id) - size AS before
    FROM (
        SELECT id, size FROM outbox WHERE {where} AND consumer = ANY(:consumers)
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    ) l
) c
WHERE o.id = c.id AND c.before < :limit
RETURNING o.id, o.workspace_id, o.consumer, o.attempts,
          o.profile_ids, o.event_ids, o.event_names, o.occurred_ats, o.message_ids
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
    "SELECT COALESCE(sum(size) FILTER (WHERE claimed_until IS NULL), 0), "
    "COALESCE(sum(size) FILTER (WHERE claimed_until IS NOT NULL), 0), min(created_at) FROM outbox"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One announced event (or profile change) of a claimed row; the
    events of one row share its `id`."""

    id: int
    workspace_id: uuid.UUID
    consumer: str
    profile_id: uuid.UUID
    event_id: uuid.UUID
    event_name: str | None
    attempts: int
    occurred_at: datetime | None = None
    message_id: str | None = None


def expand(claimed: Iterable[Sequence[Any]]) -> list[OutboxRow]:
    """Claimed rows (as CLAIM_SQL returns them), one OutboxRow per event, in
    row and array order."""
    out: list[OutboxRow] = []
    for row_id, workspace_id, consumer, attempts, profiles, events, names, times, keys in sorted(
        claimed, key=lambda r: r[0]
    ):
        out += [
            OutboxRow(row_id, workspace_id, consumer, p, e, n, attempts, o, m)
            for p, e, n, o, m in zip(profiles, events, names, times, keys, strict=True)
        ]
    return out


async def claim(
    engine: AsyncEngine, consumers: Sequence[str], limit: int, lease_seconds: float, *, expired: bool
) -> list[OutboxRow]:
    """Lease rows of these consumers holding about `limit` events (at least
    one row): new ones, or (`expired`) those whose lease ran out. Several
    dispatchers never claim the same row (SKIP LOCKED); rows of a consumer
    this dispatcher does not run are left for one that does."""
    async with engine.begin() as conn:
        rows = await conn.execute(
            CLAIM_EXPIRED_SQL if expired else CLAIM_NEW_SQL,
            {"limit": limit, "lease": lease_seconds, "consumers": list(consumers)},
        )
        return expand(rows)


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
    """(unclaimed events, claimed events, oldest row's time) for status output."""
    async with engine.connect() as conn:
        row = (await conn.execute(BACKLOG_SQL)).one()
    return row[0], row[1], row[2]
