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


async def announced(engine: AsyncEngine, workspace_id: uuid.UUID, consumer: str) -> list[tuple]:
    """(event_name, profile_id, event_id) of the consumer's outbox rows, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_name, profile_id, event_id FROM outbox "
                "WHERE workspace_id = :w AND consumer = :c ORDER BY id"
            ),
            {"w": workspace_id, "c": consumer},
        )
        return [tuple(r) for r in rows]
