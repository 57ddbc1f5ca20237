"""SQL of flow runs: enrollments (with re-entry rules), steps, and what
the outbox consumer needs (active triggers, running enrollments, events).

Re-entry is decided here, in PostgreSQL, so it holds after Temporal's
retention has dropped old runs: `once` refuses a person (and enrollment
key) with any earlier enrollment, `after` one whose last enrollment began
within the interval, `always` only one running at a time (a unique
partial index)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from definitions.events import Consumer
from definitions.flow_runs import DATE_ANNOUNCEMENT, EXIT_ANNOUNCEMENT, FlowRunInput
from events.writer import OUTBOX_COLUMNS

BEGIN_SQL = text(
    """
    WITH refused AS (
        SELECT 1 FROM flow_enrollments e
        WHERE e.flow_id = :flow AND e.profile_id = :profile AND e.enrollment_key = :key AND e.id <> :id
          AND (:reentry = 'once'
               OR (:reentry = 'after' AND e.entered_at > now() - make_interval(secs => :after)))
        LIMIT 1
    )
    INSERT INTO flow_enrollments (id, workspace_id, flow_id, version, profile_id, enrollment_key, workflow_id,
                                  trigger_event_id, payload)
    SELECT :id, :ws, :flow, :version, :profile, :key, :workflow_id, :trigger, CAST(:payload AS jsonb)
    WHERE NOT EXISTS (SELECT 1 FROM refused)
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)


async def begin(conn: AsyncConnection, values: dict[str, Any]) -> str:
    """Insert the enrollment unless re-entry refuses it; `started`,
    `refused` or `already_enrolled` (another run of this person and key is
    running, e.g. after a merge). A retry of the same run finds its own
    running row and reports `started`; a new run for a cause that already
    enrolled (an event delivered again after the run ended) is refused."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('enroll:' || :flow || ':' || :profile))"),
        {"flow": str(values["flow"]), "profile": str(values["profile"])},
    )
    own = await conn.scalar(text("SELECT status FROM flow_enrollments WHERE id = :id"), {"id": values["id"]})
    if own == "running":
        return "started"  # this run's own retry
    if own is not None:
        return "refused"  # the same cause again, after its enrollment ended
    inserted = (await conn.execute(BEGIN_SQL, values)).first()
    if inserted is not None:
        return "started"
    running = await conn.scalar(
        text(
            "SELECT 1 FROM flow_enrollments WHERE flow_id = :flow AND profile_id = :profile "
            "AND enrollment_key = :key AND status = 'running'"
        ),
        values,
    )
    return "already_enrolled" if running else "refused"


# Many enrollments at once (the outbox consumer, before it starts their
# runs): each is inserted with its first step under the same re-entry rules
# as BEGIN_SQL. The ids returned are those to start: the ones inserted now
# and the ones already running (a redelivered event whose start Temporal
# refused). The final SELECT reads the statement's snapshot, so it sees
# only rows that existed before.
ENTER_MANY_SQL = text(
    """
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:ws AS uuid[]), CAST(:flows AS uuid[]), CAST(:versions AS int[]),
            CAST(:profiles AS uuid[]), CAST(:keys AS text[]), CAST(:workflow_ids AS text[]),
            CAST(:triggers AS uuid[]), CAST(:payloads AS text[]), CAST(:reentry AS text[]),
            CAST(:after AS float8[]), CAST(:nodes AS text[])
        ) AS i(id, ws, flow, version, profile, key, workflow_id, trigger, payload, reentry, after, node)
    ),
    inserted AS (
        INSERT INTO flow_enrollments (id, workspace_id, flow_id, version, profile_id, enrollment_key,
                                      workflow_id, trigger_event_id, payload, current_node)
        SELECT i.id, i.ws, i.flow, i.version, i.profile, i.key, i.workflow_id, i.trigger,
               CAST(i.payload AS jsonb), i.node
        FROM input i
        WHERE NOT EXISTS (
            SELECT 1 FROM flow_enrollments e
            WHERE e.flow_id = i.flow AND e.profile_id = i.profile AND e.enrollment_key = i.key
              AND e.id <> i.id
              AND (i.reentry = 'once'
                   OR (i.reentry = 'after' AND e.entered_at > now() - make_interval(secs => i.after)))
        )
        ON CONFLICT DO NOTHING
        RETURNING id, flow_id
    ),
    steps AS (
        INSERT INTO flow_steps (enrollment_id, seq, flow_id, node_id)
        SELECT n.id, 1, n.flow_id, i.node FROM inserted n JOIN input i ON i.id = n.id
        ON CONFLICT DO NOTHING
    )
    SELECT id FROM inserted
    UNION ALL
    SELECT e.id FROM flow_enrollments e JOIN input i ON i.id = e.id WHERE e.status = 'running'
    """
)
_ENROLL_LOCKS_SQL = text(
    "SELECT count(pg_advisory_xact_lock(h)) FROM ("
    "  SELECT DISTINCT hashtext('enroll:' || f || ':' || p) AS h"
    "  FROM unnest(CAST(:flows AS text[]), CAST(:profiles AS text[])) AS k(f, p) ORDER BY 1"
    ") locks"
)


async def enter_many(conn: AsyncConnection, runs: Sequence[tuple[FlowRunInput, str]]) -> set[uuid.UUID]:
    """Record enrollments, each with its first step, for (run input,
    workflow id) pairs; returns the enrollment ids whose runs should start
    (see ENTER_MANY_SQL). Takes `begin`'s advisory locks first, in one
    order, so it and `begin` never decide on the same person at once."""
    if not runs:
        return set()
    await conn.execute(
        _ENROLL_LOCKS_SQL,
        {"flows": [str(r.flow_id) for r, _ in runs], "profiles": [str(r.profile_id) for r, _ in runs]},
    )
    settings = [r.graph.settings for r, _ in runs]
    result = await conn.execute(
        ENTER_MANY_SQL,
        {
            "ids": [r.enrollment_id for r, _ in runs],
            "ws": [r.workspace_id for r, _ in runs],
            "flows": [r.flow_id for r, _ in runs],
            "versions": [r.version for r, _ in runs],
            "profiles": [r.profile_id for r, _ in runs],
            "keys": [r.enrollment_key for r, _ in runs],
            "workflow_ids": [workflow_id for _, workflow_id in runs],
            "triggers": [r.trigger.id if r.trigger else None for r, _ in runs],
            "payloads": [orjson.dumps(r.payload).decode() for r, _ in runs],
            "reentry": [s.reentry.value for s in settings],
            "after": [float(s.reentry_after_seconds or 0) for s in settings],
            "nodes": [r.graph.start for r, _ in runs],
        },
    )
    return {row[0] for row in result}


async def enrollment_status(
    conn: AsyncConnection, workspace_id: uuid.UUID, enrollment_id: uuid.UUID
) -> str | None:
    """The enrollment's status (locked until commit), None when gone."""
    return await conn.scalar(
        text("SELECT status FROM flow_enrollments WHERE workspace_id = :w AND id = :id FOR UPDATE"),
        {"w": workspace_id, "id": enrollment_id},
    )


async def enter_step(
    conn: AsyncConnection,
    enrollment_id: uuid.UUID,
    flow_id: uuid.UUID,
    seq: int,
    node_id: str,
    previous_edge: str | None,
) -> None:
    """Leave the previous step over its edge, enter this one (idempotent)."""
    if previous_edge is not None:
        await leave_step(conn, enrollment_id, seq - 1, previous_edge, None)
    await conn.execute(
        text(
            "INSERT INTO flow_steps (enrollment_id, seq, flow_id, node_id) VALUES (:e, :s, :f, :n) "
            "ON CONFLICT DO NOTHING"
        ),
        {"e": enrollment_id, "s": seq, "f": flow_id, "n": node_id},
    )
    await conn.execute(
        text("UPDATE flow_enrollments SET current_node = :n, updated_at = now() WHERE id = :e"),
        {"e": enrollment_id, "n": node_id},
    )


async def leave_step(
    conn: AsyncConnection, enrollment_id: uuid.UUID, seq: int, edge: str | None, outcome: str | None
) -> None:
    """Mark a step left (once)."""
    await conn.execute(
        text(
            "UPDATE flow_steps SET left_at = now(), edge = :edge, outcome = COALESCE(:outcome, outcome) "
            "WHERE enrollment_id = :e AND seq = :s AND left_at IS NULL"
        ),
        {"e": enrollment_id, "s": seq, "edge": edge, "outcome": outcome},
    )


async def finish(
    conn: AsyncConnection, workspace_id: uuid.UUID, enrollment_id: uuid.UUID, status: str, converted: bool
) -> None:
    """End a running enrollment with `status` (an exited one stays exited)."""
    await conn.execute(
        text(
            """
            UPDATE flow_enrollments
            SET status = CASE WHEN status = 'running' THEN :status ELSE status END,
                completed_at = COALESCE(completed_at, now()),
                converted_at = CASE WHEN :converted THEN COALESCE(converted_at, now()) ELSE converted_at END,
                updated_at = now()
            WHERE workspace_id = :w AND id = :e
            """
        ),
        {"w": workspace_id, "e": enrollment_id, "status": status, "converted": converted},
    )


async def mark_exited(
    conn: AsyncConnection, workspace_id: uuid.UUID, enrollment_ids: Sequence[uuid.UUID]
) -> None:
    """Running enrollments asked to leave (API, archive)."""
    await conn.execute(
        text(
            "UPDATE flow_enrollments SET status = 'exited', completed_at = now(), updated_at = now() "
            "WHERE workspace_id = :w AND id = ANY(:ids) AND status = 'running'"
        ),
        {"w": workspace_id, "ids": list(enrollment_ids)},
    )


async def flow_status(conn: AsyncConnection, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> str | None:
    """A flow's lifecycle status."""
    return await conn.scalar(
        text("SELECT status FROM flows WHERE workspace_id = :w AND id = :f"),
        {"w": workspace_id, "f": flow_id},
    )


async def profile_row(
    conn: AsyncConnection, workspace_id: uuid.UUID, profile_id: uuid.UUID
) -> RowMapping | None:
    """A profile's identity and traits."""
    result = await conn.execute(
        text(
            "SELECT id, email::text AS email, external_id, traits FROM profiles "
            "WHERE workspace_id = :w AND id = :p"
        ),
        {"w": workspace_id, "p": profile_id},
    )
    return result.mappings().first()


async def workspace_timezone(conn: AsyncConnection, workspace_id: uuid.UUID) -> str | None:
    """The workspace's default timezone setting."""
    return await conn.scalar(
        text("SELECT settings->>'timezone' FROM workspaces WHERE id = :w"), {"w": workspace_id}
    )


# -- the outbox consumer --------------------------------------------------------


async def live_flows(conn: AsyncConnection, workspace_ids: Sequence[uuid.UUID]) -> Sequence[RowMapping]:
    """Active flows (they take new enrollments) with their current version's definition."""
    result = await conn.execute(
        text(
            """
            SELECT f.id, f.workspace_id, f.version, v.definition
            FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version
            WHERE f.workspace_id = ANY(:ws) AND f.status = 'active'
            """
        ),
        {"ws": list(workspace_ids)},
    )
    return result.mappings().all()


async def running_enrollments(
    conn: AsyncConnection, profiles: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> Sequence[RowMapping]:
    """Running enrollments of these (workspace, profile) pairs, with their
    version's definition (for what they listen to)."""
    if not profiles:
        return []
    result = await conn.execute(
        text(
            """
            SELECT e.id, e.workspace_id, e.flow_id, e.version, e.profile_id, e.workflow_id, e.enrollment_key,
                   v.definition
            FROM unnest(CAST(:ws AS uuid[]), CAST(:ps AS uuid[])) AS k(w, p)
            JOIN flow_enrollments e ON e.workspace_id = k.w AND e.profile_id = k.p AND e.status = 'running'
            JOIN flow_versions v ON v.flow_id = e.flow_id AND v.version = e.version
            """
        ),
        {"ws": [w for w, _ in profiles], "ps": [p for _, p in profiles]},
    )
    return result.mappings().all()


async def earlier_enrollments(
    conn: AsyncConnection, keys: Sequence[tuple[uuid.UUID, uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, uuid.UUID, str], datetime]:
    """(flow, profile, key) → when the latest enrollment began, for re-entry pre-checks."""
    if not keys:
        return {}
    result = await conn.execute(
        text(
            """
            SELECT k.f, k.p, k.k, max(e.entered_at)
            FROM unnest(CAST(:fs AS uuid[]), CAST(:ps AS uuid[]), CAST(:ks AS text[])) AS k(f, p, k)
            JOIN flow_enrollments e ON e.flow_id = k.f AND e.profile_id = k.p AND e.enrollment_key = k.k
            GROUP BY k.f, k.p, k.k
            """
        ),
        {"fs": [f for f, _, _ in keys], "ps": [p for _, p, _ in keys], "ks": [k for _, _, k in keys]},
    )
    return {(r[0], r[1], r[2]): r[3] for r in result}


async def events_by_key(conn: AsyncConnection, rows: Sequence[Any]) -> dict[uuid.UUID, RowMapping]:
    """Stored events of outbox rows, read by their idempotency key (the
    events table's unique index, whatever merges did to profile ids)."""
    keyed = [r for r in rows if r.message_id is not None and r.occurred_at is not None]
    if not keyed:
        return {}
    result = await conn.execute(
        text(
            """
            SELECT e.id, e.workspace_id, e.profile_id, e.name, e.properties, e.occurred_at
            FROM unnest(CAST(:ws AS uuid[]), CAST(:ms AS text[]), CAST(:os AS timestamptz[]),
                        CAST(:ids AS uuid[])) AS k(w, m, o, i)
            JOIN events e
              ON e.workspace_id = k.w AND e.message_id = k.m AND e.occurred_at = k.o AND e.id = k.i
            """
        ),
        {
            "ws": [r.workspace_id for r in keyed],
            "ms": [r.message_id for r in keyed],
            "os": [r.occurred_at for r in keyed],
            "ids": [r.event_id for r in keyed],
        },
    )
    return {r["id"]: r for r in result.mappings()}


async def sync_listeners(
    conn: AsyncConnection, workspace_id: uuid.UUID, names: set[str], consumer: str
) -> None:
    """Make the outbox announce exactly these event names to the flows consumer."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('listeners:' || :c || ':' || :w))"),
        {"c": consumer, "w": str(workspace_id)},
    )
    await conn.execute(
        text("DELETE FROM outbox_listeners WHERE workspace_id = :w AND consumer = :c"),
        {"w": workspace_id, "c": consumer},
    )
    if names:
        await conn.execute(
            text(
                "INSERT INTO outbox_listeners (workspace_id, kind, name, consumer) "
                "SELECT :w, 'event', unnest(CAST(:names AS text[])), :c ON CONFLICT DO NOTHING"
            ),
            {"w": workspace_id, "c": consumer, "names": sorted(names)},
        )


async def listening_definitions(conn: AsyncConnection, workspace_id: uuid.UUID) -> Sequence[Any]:
    """Definitions that may listen now: the current version of active
    flows (triggers) and every version with running enrollments (waits,
    goals, exit events)."""
    result = await conn.execute(
        text(
            """
            SELECT v.definition, (f.status = 'active' AND v.version = f.version) AS takes_new
            FROM flow_versions v JOIN flows f ON f.id = v.flow_id
            WHERE v.workspace_id = :w AND f.status <> 'archived'
              AND ((f.status = 'active' AND v.version = f.version)
                   OR EXISTS (SELECT 1 FROM flow_enrollments e
                              WHERE e.flow_id = v.flow_id AND e.version = v.version AND e.status = 'running'))
            """
        ),
        {"w": workspace_id},
    )
    return result.all()


async def running_of_flow(
    conn: AsyncConnection, workspace_id: uuid.UUID, flow_id: uuid.UUID
) -> Sequence[RowMapping]:
    """Running enrollments of a flow (id, workflow id)."""
    result = await conn.execute(
        text(
            "SELECT id, workflow_id FROM flow_enrollments "
            "WHERE workspace_id = :w AND flow_id = :f AND status = 'running'"
        ),
        {"w": workspace_id, "f": flow_id},
    )
    return result.mappings().all()


async def existing_message(
    conn: AsyncConnection, workspace_id: uuid.UUID, idempotency_key: str
) -> uuid.UUID | None:
    """The message already created under this key (a retried step)."""
    return await conn.scalar(
        text("SELECT id FROM messages WHERE workspace_id = :w AND idempotency_key = :k"),
        {"w": workspace_id, "k": idempotency_key},
    )


async def set_step_outcome(
    conn: AsyncConnection, enrollment_id: uuid.UUID, node_id: str, outcome: str
) -> None:
    """Note what happened at the enrollment's open step at `node_id` (e.g. `capped`)."""
    await conn.execute(
        text(
            "UPDATE flow_steps SET outcome = :o WHERE enrollment_id = :e AND node_id = :n AND left_at IS NULL"
        ),
        {"e": enrollment_id, "n": node_id, "o": outcome},
    )


async def date_trigger_flows(conn: AsyncConnection) -> Sequence[RowMapping]:
    """Active flows whose current version has a date trigger."""
    result = await conn.execute(
        text(
            """
            SELECT f.id, f.workspace_id, v.definition
            FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version
            WHERE f.status = 'active' AND v.definition->'trigger'->>'type' = 'date'
            """
        )
    )
    return result.mappings().all()


async def profiles_with_trait(
    conn: AsyncConnection, workspace_id: uuid.UUID, path: list[str]
) -> Sequence[RowMapping]:
    """(id, value, timezone) of the workspace's profiles holding a trait at `path`."""
    result = await conn.execute(
        text(
            "SELECT id, traits #>> CAST(:path AS text[]) AS value, traits->>'timezone' AS timezone "
            "FROM profiles WHERE workspace_id = :w AND traits #>> CAST(:path AS text[]) IS NOT NULL"
        ),
        {"w": workspace_id, "path": path},
    )
    return result.mappings().all()


async def announce_dates(
    conn: AsyncConnection,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    due: Sequence[tuple[uuid.UUID, uuid.UUID, Any]],
) -> int:
    """`$date` outbox rows for due people not enrolled for that date yet."""
    if not due:
        return 0
    result = await conn.execute(
        text(
            f"""
            INSERT INTO outbox ({OUTBOX_COLUMNS})
            SELECT :w, '{Consumer.FLOWS}', 1, ARRAY[d.p], ARRAY[d.e], ARRAY['{DATE_ANNOUNCEMENT}'],
                   ARRAY[d.o], ARRAY[CAST(:f AS text)]
            FROM unnest(CAST(:ps AS uuid[]), CAST(:es AS uuid[]), CAST(:os AS timestamptz[])) AS d(p, e, o)
            WHERE NOT EXISTS (SELECT 1 FROM flow_enrollments x WHERE x.id = d.e)
              -- `$date` rows are rows of one: compare their single id (a hashable
              -- join), never search the arrays of tracked events' rows.
              AND NOT EXISTS (
                  SELECT 1 FROM outbox o
                  WHERE o.consumer = '{Consumer.FLOWS}' AND o.size = 1 AND o.event_ids[1] = d.e)
            """
        ),
        {
            "w": workspace_id,
            "f": str(flow_id),
            "ps": [p for p, _, _ in due],
            "es": [e for _, e, _ in due],
            "os": [datetime(d.year, d.month, d.day, tzinfo=UTC) for _, _, d in due],
        },
    )
    return result.rowcount


async def running_at_nodes(
    conn: AsyncConnection, workspace_id: uuid.UUID, flow_id: uuid.UUID
) -> Sequence[RowMapping]:
    """Running enrollments of a flow with where they stand and their version's definition."""
    result = await conn.execute(
        text(
            """
            SELECT e.id, e.version, e.current_node, v.definition
            FROM flow_enrollments e JOIN flow_versions v ON v.flow_id = e.flow_id AND v.version = e.version
            WHERE e.workspace_id = :w AND e.flow_id = :f AND e.status = 'running'
            """
        ),
        {"w": workspace_id, "f": flow_id},
    )
    return result.mappings().all()


_ANNOUNCE_SQL = (
    f"INSERT INTO outbox ({OUTBOX_COLUMNS}) "
    "SELECT workspace_id, :c, 1, ARRAY[profile_id], ARRAY[id], ARRAY[CAST(:n AS text)], "
    "ARRAY[CAST(NULL AS timestamptz)], ARRAY[CAST(NULL AS text)] FROM flow_enrollments "
    "WHERE workspace_id = :w AND status = 'running' AND {which}"
)


async def announce(
    conn: AsyncConnection, workspace_id: uuid.UUID, enrollment_ids: Sequence[uuid.UUID], name: str
) -> None:
    """Outbox rows telling running enrollments something (`$exit`, `$resume`)."""
    await conn.execute(
        text(_ANNOUNCE_SQL.format(which="id = ANY(:ids)")),
        {"c": Consumer.FLOWS.value, "n": name, "w": workspace_id, "ids": list(enrollment_ids)},
    )


async def erase_enrollments(conn: AsyncConnection, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> None:
    """A person is erased: their running enrollments exit (announced) and
    every enrollment's payload is emptied."""
    await conn.execute(
        text(_ANNOUNCE_SQL.format(which="profile_id = :p")),
        {"c": Consumer.FLOWS.value, "n": EXIT_ANNOUNCEMENT, "w": workspace_id, "p": profile_id},
    )
    await conn.execute(
        text(
            "UPDATE flow_enrollments SET payload = '{}'::jsonb, "
            "status = CASE WHEN status = 'running' THEN 'exited' ELSE status END, "
            "completed_at = COALESCE(completed_at, now()), updated_at = now() "
            "WHERE workspace_id = :w AND profile_id = :p"
        ),
        {"w": workspace_id, "p": profile_id},
    )


async def is_running(conn: AsyncConnection, flow_id: uuid.UUID, profile_id: uuid.UUID, key: str) -> bool:
    """Whether the person (and key) has a running enrollment in the flow."""
    found = await conn.scalar(
        text(
            "SELECT 1 FROM flow_enrollments WHERE flow_id = :f AND profile_id = :p "
            "AND enrollment_key = :k AND status = 'running'"
        ),
        {"f": flow_id, "p": profile_id, "k": key},
    )
    return found is not None


# Flow enrollments follow the surviving profile. Rule for a collision (both
# run the same flow with the same enrollment key): the survivor's enrollment
# goes on, the merged one exits (announced, so its run stops at once).
_EXIT_COLLIDING_ON_MERGE_SQL = f"""
WITH collide AS (
    UPDATE flow_enrollments s SET status = 'exited', completed_at = now(), updated_at = now()
    WHERE s.workspace_id = $1 AND s.profile_id = $2 AND s.status = 'running'
      AND EXISTS (SELECT 1 FROM flow_enrollments t
                  WHERE t.flow_id = s.flow_id AND t.profile_id = $3 AND t.enrollment_key = s.enrollment_key
                    AND t.status = 'running')
    RETURNING s.id
)
INSERT INTO outbox ({OUTBOX_COLUMNS})
SELECT $1, '{Consumer.FLOWS}', 1, ARRAY[$3::uuid], ARRAY[id], ARRAY['{EXIT_ANNOUNCEMENT}'],
       ARRAY[NULL::timestamptz], ARRAY[NULL::text]
FROM collide
"""
_MOVE_ON_MERGE_SQL = "UPDATE flow_enrollments SET profile_id = $3 WHERE workspace_id = $1 AND profile_id = $2"


async def follow_merge(conn: asyncpg.Connection, ws: uuid.UUID, source: uuid.UUID, target: uuid.UUID) -> None:
    """Inside the tracking writer's merge (raw asyncpg, same transaction):
    the merged profile's enrollments move to the survivor."""
    await conn.execute(_EXIT_COLLIDING_ON_MERGE_SQL, ws, source, target)
    await conn.execute(_MOVE_ON_MERGE_SQL, ws, source, target)
