"""Migration 0008_outbox_batches keeps what the outbox holds: rows of one
event each become batches of one, and a downgrade expands batches back
into rows of one event each.

It runs on a database of its own migrated to exactly this revision, so
later migrations are never downgraded under the suite's shared database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from db.engine import driver_connection
from events import writer as event_writer
from events.writer import EventRow
from tests.db.migration_support import own_database
from tests.support.outbox import announced, listen

REVISION = "0008"


async def _single_rows(engine, ws) -> list[tuple]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT consumer, profile_id, event_id, event_name, message_id FROM outbox "
                "WHERE workspace_id = :w ORDER BY id"
            ),
            {"w": ws},
        )
        return [tuple(r) for r in rows]


async def test_rows_survive_upgrade_and_downgrade(pg_server, settings):
    async with own_database(pg_server, settings) as (engine, cfg):
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        await _check(engine, cfg)


async def _check(engine, cfg) -> None:
    ws = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO workspaces (id, name) VALUES (:w, :n)"), {"w": ws, "n": str(ws)})
    await listen(engine, ws, "probe", events=["Order Completed"])
    now = datetime.now(UTC)
    people = [uuid.uuid4() for _ in range(3)]
    async with engine.begin() as conn:
        rows = [EventRow(ws, p, "Order Completed", {}, now, f"m-{n}") for n, p in enumerate(people)]
        await event_writer.write(await driver_connection(conn), rows)
    batch = await announced(engine, ws, "probe")
    assert [(n, p) for n, p, _ in batch] == [("Order Completed", p) for p in people]

    await asyncio.to_thread(command.downgrade, cfg, f"{REVISION}-1")
    try:
        single = await _single_rows(engine, ws)
        assert single == [("probe", p, e, "Order Completed", f"m-{n}") for n, (_, p, e) in enumerate(batch)]
        async with engine.begin() as conn:  # a row written by the code before the migration
            await conn.execute(
                text(
                    "INSERT INTO outbox (workspace_id, consumer, profile_id, event_id, event_name) "
                    "VALUES (:w, 'probe', :p, :e, NULL)"
                ),
                {"w": ws, "p": people[0], "e": uuid.uuid4()},
            )
    finally:
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
    after = await announced(engine, ws, "probe")
    assert after[:3] == batch and after[3][:2] == (None, people[0])
    async with engine.connect() as conn:
        sizes = (
            await conn.execute(text("SELECT size FROM outbox WHERE workspace_id = :w ORDER BY id"), {"w": ws})
        ).scalars()
        assert list(sizes) == [1, 1, 1, 1]
        options = await conn.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'outbox'"))
        assert "toast_tuple_target=8160" in options
