"""Test helpers for the outbox: register listeners of a test consumer and
read what the event writer announced to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from definitions.events import MERGE_LISTENER_NAME, ListenerKind


async def listen(
    engine: AsyncEngine,
    workspace_id: uuid.UUID,
    consumer: str,
    *,
    events: Iterable[str] = (),
    traits: Iterable[str] = (),
    merges: bool = False,
) -> None:
    """Make `consumer` listen for these event names, trait keys, merges."""
    rows = [(ListenerKind.EVENT.value, n) for n in events] + [(ListenerKind.TRAIT.value, k) for k in traits]
    if merges:
        rows.append((ListenerKind.MERGE.value, MERGE_LISTENER_NAME))
    async with engine.begin() as conn:
        for kind, name in rows:
            await conn.execute(
                text(
                    "INSERT INTO outbox_listeners (workspace_id, kind, name, consumer) "
                    "VALUES (:w, :k, :n, :c)"
                ),
                {"w": workspace_id, "k": kind, "n": name, "c": consumer},
            )


# The outbox as one row per announced event (a row of the table carries the
# events of one statement as arrays): use as `FROM ({OUTBOX_EVENTS}) o`.
OUTBOX_EVENTS = """
SELECT o.id, o.workspace_id, o.consumer, o.claimed_until, u.profile_id, u.event_id, u.event_name,
       u.occurred_at, u.message_id, u.k
FROM outbox o,
     unnest(o.profile_ids, o.event_ids, o.event_names, o.occurred_ats, o.message_ids)
         WITH ORDINALITY AS u(profile_id, event_id, event_name, occurred_at, message_id, k)
"""


async def announced(engine: AsyncEngine, workspace_id: uuid.UUID, consumer: str) -> list[tuple]:
    """(event_name, profile_id, event_id) of what the outbox announces to the
    consumer, one tuple per event, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT event_name, profile_id, event_id FROM ({OUTBOX_EVENTS}) o "
                "WHERE workspace_id = :w AND consumer = :c ORDER BY id, k"
            ),
            {"w": workspace_id, "c": consumer},
        )
        return [tuple(r) for r in rows]


async def outbox_sizes(engine: AsyncEngine, workspace_id: uuid.UUID, consumer: str) -> list[int]:
    """How many events each of the consumer's outbox rows carries, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT size FROM outbox WHERE workspace_id = :w AND consumer = :c ORDER BY id"),
            {"w": workspace_id, "c": consumer},
        )
        return [r[0] for r in rows]
