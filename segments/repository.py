"""SQL for segments: CRUD, members, estimates, refreshes, and the facts a
single-profile check needs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    Select,
    and_,
    any_,
    delete,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.engine import driver_connection
from db.tables import events, profiles, segment_memberships, segments, topic_optouts, workspaces
from definitions.events import (
    MERGE_LISTENER_NAME,
    Consumer,
    EventType,
    ListenerKind,
    SystemEvent,
    segment_event_key,
    segment_event_key_prefix,
)
from events import writer as event_writer
from events.writer import EventRow

SEGMENT_COLUMNS = (
    segments.c.id,
    segments.c.name,
    segments.c.description,
    segments.c.definition,
    segments.c.version,
    segments.c.member_count,
    segments.c.computed_at,
    segments.c.created_at,
    segments.c.updated_at,
)


async def get_segment(
    session: AsyncSession | AsyncConnection,
    workspace_id: uuid.UUID,
    segment_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> RowMapping | None:
    """One segment of the workspace, or None."""
    stmt = select(*SEGMENT_COLUMNS, segments.c.segment_refs).where(
        segments.c.workspace_id == workspace_id, segments.c.id == segment_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().first()


async def segment_refs(session: AsyncSession, workspace_id: uuid.UUID) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each segment's direct references, for cycle checks."""
    rows = await session.execute(
        select(segments.c.id, segments.c.segment_refs).where(segments.c.workspace_id == workspace_id)
    )
    return {r[0]: list(r[1]) for r in rows}


async def referencing_segments(
    session: AsyncSession, workspace_id: uuid.UUID, segment_id: uuid.UUID
) -> list[str]:
    """Names of segments whose definition refers to this one."""
    rows = await session.execute(
        select(segments.c.name).where(
            segments.c.workspace_id == workspace_id, literal(segment_id) == any_(segments.c.segment_refs)
        )
    )
    return [r[0] for r in rows]


async def members_page(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    segment_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
) -> Sequence[RowMapping]:
    """Stored members (as of the last refresh), by profile id.

    The page of memberships is taken first (the primary key's order, a
    LIMIT inside the subquery), then joined to its profiles: written as one
    join, a planner whose statistics lag a large refresh (before autoanalyze
    has run) may hash-join every member to `profiles` for a page of 25."""
    m = segment_memberships
    page = select(m.c.profile_id, m.c.entered_at).where(
        m.c.segment_id == segment_id, m.c.workspace_id == workspace_id
    )
    if after is not None:
        page = page.where(m.c.profile_id > after)
    page = page.order_by(m.c.profile_id).limit(limit).subquery()
    stmt = (
        select(page.c.profile_id, profiles.c.email, profiles.c.external_id, page.c.entered_at)
        .join(profiles, (profiles.c.id == page.c.profile_id) & (profiles.c.workspace_id == workspace_id))
        .order_by(page.c.profile_id)
    )
    return (await session.execute(stmt)).mappings().all()


async def count_matching(conn: AsyncSession | AsyncConnection, members: Select[Any]) -> int:
    """How many profiles a compiled definition selects."""
    return (await conn.execute(select(func.count()).select_from(members.subquery()))).scalar_one()


async def sample_matching(
    conn: AsyncSession | AsyncConnection, members: Select[Any], size: int
) -> Sequence[RowMapping]:
    """A few matching profiles."""
    if size == 0:
        return []
    chosen = members.limit(size).subquery()
    stmt = select(profiles.c.id, profiles.c.email, profiles.c.external_id, profiles.c.traits).join(
        chosen, chosen.c.profile_id == profiles.c.id
    )
    return (await conn.execute(stmt)).mappings().all()


async def lock_segment(conn: AsyncSession | AsyncConnection, segment_id: uuid.UUID) -> None:
    """Serialise writers of one segment's memberships until commit."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('segment:' || :sid))"), {"sid": str(segment_id)}
    )


def _membership_event(
    source: Any,
    workspace_id: uuid.UUID,
    segment_id: uuid.UUID,
    segment_name: str,
    now: datetime,
    entered: bool,
) -> Select[Any]:
    """`Segment Entered` / `Segment Exited` rows for the profiles of `source`,
    in events/writer.py's column order, keyed by definitions/events.py."""
    name = SystemEvent.SEGMENT_ENTERED if entered else SystemEvent.SEGMENT_EXITED
    stamp = int(now.timestamp() * 1000)
    message = func.concat(segment_event_key_prefix(segment_id, entered), source.c.profile_id, f":{stamp}")
    return select(
        func.mp_uuid7(),
        literal(workspace_id),
        source.c.profile_id,
        literal(EventType.SYSTEM.value),
        literal(name.value),
        func.jsonb_build_object("segment_id", str(segment_id), "segment_name", segment_name),
        null(),
        literal(now),
        literal(now),
        message,
    )


async def apply_refresh(
    conn: AsyncSession | AsyncConnection,
    workspace_id: uuid.UUID,
    segment_id: uuid.UUID,
    segment_name: str,
    members: Select[Any],
    now: datetime,
) -> tuple[int, int, int]:
    """Replace stored members with `members` and write `Segment Entered` /
    `Segment Exited` events for the difference, in one statement. Returns
    (member count, entered, exited)."""
    m = segment_memberships
    new = members.cte("new_members").prefix_with("MATERIALIZED")
    exited = (
        delete(m)
        .where(m.c.segment_id == segment_id, ~exists(select(1).where(new.c.profile_id == m.c.profile_id)))
        .returning(m.c.profile_id)
        .cte("exited")
    )
    stored = select(1).where(m.c.segment_id == segment_id, m.c.profile_id == new.c.profile_id).exists()
    entered = (
        pg_insert(m)
        .from_select(
            ["segment_id", "workspace_id", "profile_id", "entered_at"],
            # Only newcomers: probing the key of every unchanged member costs more than an anti-join.
            select(literal(segment_id), literal(workspace_id), new.c.profile_id, literal(now)).where(~stored),
        )
        .on_conflict_do_nothing()
        .returning(m.c.profile_id)
        .cte("entered")
    )
    still_there = exists(select(1).where(profiles.c.id == exited.c.profile_id))
    wrote = [
        *event_writer.insert_from_select(
            "wrote_in", _membership_event(entered, workspace_id, segment_id, segment_name, now, True)
        ),
        *event_writer.insert_from_select(
            "wrote_out",
            _membership_event(exited, workspace_id, segment_id, segment_name, now, False).where(still_there),
        ),
    ]
    stmt = select(
        select(func.count()).select_from(new).scalar_subquery(),
        select(func.count()).select_from(entered).scalar_subquery(),
        select(func.count()).select_from(exited).scalar_subquery(),
    ).add_cte(*wrote)
    row = (await conn.execute(stmt)).one()
    return row[0], row[1], row[2]


async def record_refresh(
    conn: AsyncSession | AsyncConnection, segment_id: uuid.UUID, member_count: int, now: datetime
) -> None:
    """Store the new count and refresh time."""
    await conn.execute(
        update(segments).where(segments.c.id == segment_id).values(member_count=member_count, computed_at=now)
    )


async def due_segments(
    conn: AsyncConnection,
    now: datetime,
    limit: int,
    after: tuple[datetime | None, uuid.UUID] | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID, datetime | None]]:
    """(id, workspace_id, computed_at) of segments never computed, or older
    than their workspace's interval at `now`: never-computed first, then
    oldest first, in pages that start after the (computed_at, id) `after`."""
    minutes = func.coalesce(workspaces.c.settings["segment_refresh_minutes"].astext.cast(Integer), 5)
    stmt = (
        select(segments.c.id, segments.c.workspace_id, segments.c.computed_at)
        .join(workspaces, workspaces.c.id == segments.c.workspace_id)
        .where(
            or_(
                segments.c.computed_at.is_(None),
                segments.c.computed_at + func.make_interval(0, 0, 0, 0, 0, minutes) <= now,
            )
        )
        .order_by(segments.c.computed_at.asc().nulls_first(), segments.c.id.asc())
        .limit(limit)
    )
    if after is not None:
        computed_at, segment_id = after
        if computed_at is None:  # still among the never-computed, then every computed one
            stmt = stmt.where(
                or_(
                    and_(segments.c.computed_at.is_(None), segments.c.id > segment_id),
                    segments.c.computed_at.is_not(None),
                )
            )
        else:
            stmt = stmt.where(
                or_(
                    segments.c.computed_at > computed_at,
                    and_(segments.c.computed_at == computed_at, segments.c.id > segment_id),
                )
            )
    return [(r[0], r[1], r[2]) for r in await conn.execute(stmt)]


# -- single-profile facts ---------------------------------------------------


async def load_traits(
    conn: AsyncConnection, workspace_id: uuid.UUID, profile_ids: Sequence[uuid.UUID]
) -> dict:
    """Traits of existing profiles."""
    rows = await conn.execute(
        select(profiles.c.id, profiles.c.traits).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id.in_(profile_ids)
        )
    )
    return {r[0]: r[1] for r in rows}


async def load_events(
    conn: AsyncConnection,
    workspace_id: uuid.UUID,
    profile_ids: Sequence[uuid.UUID],
    names: Sequence[str],
    since: datetime | None,
    until: datetime | None,
) -> Sequence[Any]:
    """(profile_id, name, properties, occurred_at) of the named events."""
    if not names:
        return []
    where = [
        events.c.workspace_id == workspace_id,
        events.c.profile_id.in_(profile_ids),
        events.c.name.in_(names),
    ]
    if since is not None:
        where.append(events.c.occurred_at >= since)
    if until is not None:
        where.append(events.c.occurred_at <= until)
    stmt = select(events.c.profile_id, events.c.name, events.c.properties, events.c.occurred_at).where(*where)
    return (await conn.execute(stmt)).all()


async def load_memberships(
    conn: AsyncConnection, profile_ids: Sequence[uuid.UUID], segment_ids: Sequence[uuid.UUID]
) -> Sequence[Any]:
    """(profile_id, segment_id) memberships among the given segments."""
    if not segment_ids:
        return []
    m = segment_memberships
    stmt = select(m.c.profile_id, m.c.segment_id).where(
        and_(m.c.profile_id.in_(profile_ids), m.c.segment_id.in_(segment_ids))
    )
    return (await conn.execute(stmt)).all()


async def load_topic_optouts(
    conn: AsyncConnection, workspace_id: uuid.UUID, profile_ids: Sequence[uuid.UUID], keys: Sequence[str]
) -> Sequence[Any]:
    """(profile_id, topic_key) opt-outs of these profiles among the given topics."""
    if not keys or not profile_ids:
        return []
    o = topic_optouts
    stmt = select(o.c.profile_id, o.c.topic_key).where(
        o.c.workspace_id == workspace_id, o.c.profile_id.in_(profile_ids), o.c.topic_key.in_(keys)
    )
    return (await conn.execute(stmt)).all()


async def workspace_segments(conn: AsyncConnection, workspace_id: uuid.UUID) -> Sequence[RowMapping]:
    """Every segment of a workspace with what it depends on."""
    stmt = select(
        segments.c.id,
        segments.c.name,
        segments.c.definition,
        segments.c.event_names,
        segments.c.trait_keys,
        segments.c.segment_refs,
    ).where(segments.c.workspace_id == workspace_id)
    return (await conn.execute(stmt.order_by(segments.c.id))).mappings().all()


async def add_memberships(
    conn: AsyncConnection, rows: Sequence[tuple[uuid.UUID, uuid.UUID]], workspace_id: uuid.UUID, now: datetime
) -> Sequence[tuple[uuid.UUID, uuid.UUID]]:
    """Insert (segment_id, profile_id) memberships; returns those that were new."""
    if not rows:
        return []
    stmt = (
        pg_insert(segment_memberships)
        .values(
            [
                {"segment_id": s, "profile_id": p, "workspace_id": workspace_id, "entered_at": now}
                for s, p in rows
            ]
        )
        .on_conflict_do_nothing()
        .returning(segment_memberships.c.segment_id, segment_memberships.c.profile_id)
    )
    return [(r[0], r[1]) for r in await conn.execute(stmt)]


async def remove_memberships(
    conn: AsyncConnection, rows: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> Sequence[tuple[uuid.UUID, uuid.UUID]]:
    """Delete (segment_id, profile_id) memberships; returns those that existed."""
    removed = []
    for segment_id, profile_id in rows:
        stmt = (
            delete(segment_memberships)
            .where(
                segment_memberships.c.segment_id == segment_id, segment_memberships.c.profile_id == profile_id
            )
            .returning(segment_memberships.c.segment_id, segment_memberships.c.profile_id)
        )
        removed += [(r[0], r[1]) for r in await conn.execute(stmt)]
    return removed


async def write_membership_events(
    conn: AsyncConnection,
    workspace_id: uuid.UUID,
    changes: Sequence[tuple[bool, uuid.UUID, str, uuid.UUID]],
    now: datetime,
) -> None:
    """Write `Segment Entered` / `Segment Exited` events through the event
    writer: (entered?, segment id, segment name, profile id)."""
    if not changes:
        return
    stamp = int(now.timestamp() * 1000)
    rows = [
        EventRow(
            workspace_id=workspace_id,
            profile_id=pid,
            name=(SystemEvent.SEGMENT_ENTERED if entered else SystemEvent.SEGMENT_EXITED).value,
            properties={"segment_id": str(sid), "segment_name": sname},
            occurred_at=now,
            message_id=segment_event_key(sid, pid, entered, stamp),
        )
        for entered, sid, sname, pid in changes
    ]
    await event_writer.write(await driver_connection(conn), rows)


async def sync_listeners(session: AsyncSession | AsyncConnection, workspace_id: uuid.UUID) -> None:
    """Make the outbox listen for what the workspace's segments read: their
    event names and trait keys, and merges (a merged profile is re-checked)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('listeners:segments:' || :w))"), {"w": str(workspace_id)}
    )
    await session.execute(
        text("DELETE FROM outbox_listeners WHERE workspace_id = :w AND consumer = :c"),
        {"w": workspace_id, "c": Consumer.SEGMENTS.value},
    )
    await session.execute(
        text(
            """
            INSERT INTO outbox_listeners (workspace_id, kind, name, consumer)
            SELECT DISTINCT s.workspace_id, :event, unnest(s.event_names), :c
            FROM segments s WHERE s.workspace_id = :w
            UNION
            SELECT DISTINCT s.workspace_id, :trait, unnest(s.trait_keys), :c
            FROM segments s WHERE s.workspace_id = :w
            UNION
            SELECT DISTINCT s.workspace_id, :merge, :any, :c FROM segments s WHERE s.workspace_id = :w
            """
        ),
        {
            "w": workspace_id,
            "c": Consumer.SEGMENTS.value,
            "event": ListenerKind.EVENT.value,
            "trait": ListenerKind.TRAIT.value,
            "merge": ListenerKind.MERGE.value,
            "any": MERGE_LISTENER_NAME,
        },
    )


async def names(
    session: AsyncSession | AsyncConnection, workspace_id: uuid.UUID, segment_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Name by id of those of `segment_ids` that belong to the workspace."""
    if not segment_ids:
        return {}
    stmt = select(segments.c.id, segments.c.name).where(
        segments.c.workspace_id == workspace_id, segments.c.id.in_(segment_ids)
    )
    return {row.id: row.name for row in await session.execute(stmt)}
