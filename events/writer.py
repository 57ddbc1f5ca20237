"""The one event writer.

Every event the platform stores goes through this module: tracked calls
(the tracking group commit embeds `WRITE_SQL` / `insert_cte` in its own
single statement), `Segment Entered/Exited` (refreshes, set-wise, through
`insert_from_select`; re-checks through `write`), `Email …` events (send
path and engagement, through `insert_cte` and `write_once`) and
`Profile Updated` (the management API, through `write`).

In the statement that inserts events, rows go into `outbox` for the events
(and profile changes: trait keys, merges) that a listener of the event's
workspace waits for (`outbox_listeners`): one row per workspace and
consumer, carrying the statement's events as arrays (events/outbox.py hands
consumers one `OutboxRow` per event). Only events actually inserted are
announced: a duplicate (same idempotency key) is skipped with its outbox
entry, so a retried write announces nothing twice. With no listener the
join is one probe of an empty index per event.

Rows are passed as one JSON document expanded by `json_to_recordset` (see
tracking/repository.py for why that is cheapest on the hot path); names of
system events and their keys come from definitions/events.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import and_, func, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import Select
from sqlalchemy.sql.selectable import CTE

from core.ids import uuid7
from db.tables import events, outbox, outbox_listeners
from definitions.events import EventType, ListenerKind

EVENT_COLUMNS = (
    "id, workspace_id, profile_id, type, name, properties, context, occurred_at, received_at, message_id"
)
EVENTS_RECORDSET = """json_to_recordset({param}::text::json) AS t(
        i uuid, w uuid, p uuid, y text, n text, pr jsonb, c jsonb, o timestamptz, r timestamptz, m text)"""
SELECT_FROM_RECORDSET = "SELECT t.i, t.w, t.p, t.y, t.n, t.pr, t.c, t.o, t.r, t.m FROM " + EVENTS_RECORDSET


def insert_cte(name: str, select_sql: str) -> str:
    """A CTE inserting the rows of `select_sql` (columns in EVENT_COLUMNS
    order) into events, skipping duplicates, returning what was stored."""
    return f"""{name} AS (
    INSERT INTO events ({EVENT_COLUMNS})
    {select_sql}
    ON CONFLICT DO NOTHING
    RETURNING id, workspace_id, profile_id, name, occurred_at, message_id
)"""


# One outbox row per statement, workspace and consumer carries the
# announced events as parallel arrays: a group commit of 30 events writes
# one row, not 30 heap tuples and primary-key entries.
OUTBOX_COLUMNS = (
    "workspace_id, consumer, size, profile_ids, event_ids, event_names, occurred_ats, message_ids"
)

# Set-wise writes (refreshes) split their announcements into rows of at
# most this many events; a tracking group holds at most a few thousand.
OUTBOX_ROW_EVENTS = 1000


def outbox_cte(name: str, inserted: str) -> str:
    """A CTE writing the outbox rows of the events a CTE inserted: one per
    workspace and listening consumer."""
    return f"""{name} AS (
    INSERT INTO outbox ({OUTBOX_COLUMNS})
    SELECT e.workspace_id, l.consumer, count(*), array_agg(e.profile_id), array_agg(e.id), array_agg(e.name),
           array_agg(e.occurred_at), array_agg(e.message_id)
    FROM {inserted} e
    JOIN outbox_listeners l
      ON l.workspace_id = e.workspace_id AND l.kind = '{ListenerKind.EVENT}' AND l.name = e.name
    GROUP BY e.workspace_id, l.consumer
)"""


def changes_cte(name: str, param: str) -> str:
    """A CTE writing outbox rows for profile changes given as JSON
    `[{w, p, i, k: [trait keys], m: merged}]`: each profile once per
    consumer listening for one of the keys, or for merges, in one row per
    workspace and consumer (no event name, time or key)."""
    return f"""{name} AS (
    INSERT INTO outbox ({OUTBOX_COLUMNS})
    SELECT d.w, d.consumer, count(*), array_agg(d.p), array_agg(d.i), array_agg(NULL::text),
           array_agg(NULL::timestamptz), array_agg(NULL::text)
    FROM (
        SELECT DISTINCT ON (c.w, c.p, l.consumer) c.w, l.consumer, c.p, c.i
        FROM json_to_recordset({param}::text::json) AS c(w uuid, p uuid, i uuid, k text[], m boolean)
        JOIN outbox_listeners l ON l.workspace_id = c.w
         AND ((l.kind = '{ListenerKind.TRAIT}' AND l.name = ANY(c.k))
              OR (l.kind = '{ListenerKind.MERGE}' AND c.m))
        ORDER BY c.w, c.p, l.consumer
    ) d
    GROUP BY d.w, d.consumer
)"""


# Events and profile changes in one statement: $1 events, $2 changes.
WRITE_SQL = f"""
WITH {insert_cte("inserted", SELECT_FROM_RECORDSET.format(param="$1"))},
{outbox_cte("announced", "inserted")},
{changes_cte("changed", "$2")}
SELECT id FROM inserted
"""


@dataclass(slots=True)
class EventRow:
    """One event to store (system events and API writes)."""

    workspace_id: uuid.UUID
    profile_id: uuid.UUID
    name: str
    properties: dict[str, Any]
    occurred_at: datetime
    message_id: str
    type: str = EventType.SYSTEM.value
    context: dict[str, Any] | None = None
    received_at: datetime | None = None
    id: uuid.UUID = field(default_factory=uuid7)

    def as_json(self) -> dict[str, Any]:
        """The row in the recordset shape of EVENTS_RECORDSET."""
        return {
            "i": self.id, "w": self.workspace_id, "p": self.profile_id, "y": self.type, "n": self.name,
            "pr": self.properties, "c": self.context, "o": self.occurred_at,
            "r": self.received_at or self.occurred_at, "m": self.message_id,
        }  # fmt: skip


@dataclass(slots=True)
class ProfileChange:
    """A change to a profile that is not an event: traits set (top-level
    keys) or other profiles merged into it."""

    workspace_id: uuid.UUID
    profile_id: uuid.UUID
    trait_keys: Sequence[str] = ()
    merged: bool = False
    id: uuid.UUID = field(default_factory=uuid7)

    def as_json(self) -> dict[str, Any]:
        """The row in the recordset shape of `changes_cte`."""
        return {
            "w": self.workspace_id,
            "p": self.profile_id,
            "i": self.id,
            "k": list(self.trait_keys),
            "m": self.merged,
        }


def to_json(rows: Iterable[Any]) -> str:
    """Rows as the JSON text the recordsets expand (UUIDs and datetimes as strings)."""
    return orjson.dumps(list(rows), default=str).decode()


async def write(
    conn: asyncpg.Connection, rows: Sequence[EventRow], changes: Sequence[ProfileChange] = ()
) -> set[uuid.UUID]:
    """Store events (duplicates skipped) and announce them and the profile
    changes to their listeners, in one statement. Returns the ids stored."""
    if not rows and not changes:
        return set()
    stored = await conn.fetch(
        WRITE_SQL, to_json(r.as_json() for r in rows), to_json(c.as_json() for c in changes)
    )
    return {r[0] for r in stored}


async def write_once(conn: asyncpg.Connection, row: EventRow) -> bool:
    """Store an event once per `message_id`, whatever its time (the table's
    key includes `occurred_at`, which a repeated webhook or unsubscribe may
    not share). Must run inside a transaction; False if it existed."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", row.message_id)
    found = await conn.fetchval(
        "SELECT 1 FROM events WHERE workspace_id = $1 AND message_id = $2 LIMIT 1",
        row.workspace_id,
        row.message_id,
    )
    if found is not None:
        return False
    return bool(await write(conn, [row]))


def insert_from_select(name: str, source: Select[Any]) -> list[CTE]:
    """SQLAlchemy CTEs that insert the events `source` selects (columns in
    EVENT_COLUMNS order; use `mp_uuid7()` for ids) and their outbox rows;
    attach them to a statement with `add_cte`. The first CTE returns the
    stored events' (id, workspace_id, profile_id, name, occurred_at, message_id)."""
    columns = [c.strip() for c in EVENT_COLUMNS.split(",")]
    stored = (
        pg_insert(events)
        .from_select(columns, source)
        .on_conflict_do_nothing()
        .returning(
            events.c.id,
            events.c.workspace_id,
            events.c.profile_id,
            events.c.name,
            events.c.occurred_at,
            events.c.message_id,
        )
        .cte(name)
    )
    # A refresh may insert a million events: rows of at most
    # OUTBOX_ROW_EVENTS each, so that a dispatcher's claim stays bounded.
    numbered = select(stored, ((func.row_number().over() - 1) // OUTBOX_ROW_EVENTS).label("chunk")).subquery(
        f"{name}_numbered"
    )
    announced = (
        insert(outbox)
        .from_select(
            [c.strip() for c in OUTBOX_COLUMNS.split(",")],
            select(
                numbered.c.workspace_id,
                outbox_listeners.c.consumer,
                func.count(),
                func.array_agg(numbered.c.profile_id),
                func.array_agg(numbered.c.id),
                func.array_agg(numbered.c.name),
                func.array_agg(numbered.c.occurred_at),
                func.array_agg(numbered.c.message_id),
            )
            .select_from(numbered)
            .join(
                outbox_listeners,
                and_(
                    outbox_listeners.c.workspace_id == numbered.c.workspace_id,
                    outbox_listeners.c.kind == literal(ListenerKind.EVENT.value),
                    outbox_listeners.c.name == numbered.c.name,
                ),
            )
            .group_by(numbered.c.workspace_id, outbox_listeners.c.consumer, numbered.c.chunk),
        )
        .cte(f"{name}_outbox")
    )
    return [stored, announced]
