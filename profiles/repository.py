"""SQL for the profiles API."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, and_, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.ids import uuid7
from db.engine import driver_connection
from db.tables import events, profile_aliases, profiles, segment_memberships, segments
from definitions.events import SystemEvent, profile_event_key
from events import writer as event_writer
from events.writer import EventRow, ProfileChange
from flows import runs_repository as flow_runs

PROFILE_COLUMNS = (
    profiles.c.id,
    profiles.c.email,
    profiles.c.external_id,
    profiles.c.traits,
    profiles.c.first_seen,
    profiles.c.last_seen,
    profiles.c.created_at,
    profiles.c.updated_at,
)


async def list_profiles(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
    email: str | None = None,
    external_id: str | None = None,
    traits: dict[tuple[str, ...], str] | None = None,
) -> Sequence[RowMapping]:
    """Newest first; `after` is the last id of the previous page."""
    stmt = select(*PROFILE_COLUMNS).where(profiles.c.workspace_id == workspace_id)
    if after is not None:
        stmt = stmt.where(profiles.c.id < after)
    if email is not None:
        stmt = stmt.where(profiles.c.email == email)
    if external_id is not None:
        stmt = stmt.where(profiles.c.external_id == external_id)
    for path, value in (traits or {}).items():
        stmt = stmt.where(profiles.c.traits[list(path)].astext == value)
    stmt = stmt.order_by(profiles.c.id.desc()).limit(limit)
    return (await session.execute(stmt)).mappings().all()


async def get_profile(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, *, for_update: bool = False
) -> RowMapping | None:
    """One profile of the workspace, or None."""
    stmt = select(*PROFILE_COLUMNS).where(
        profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().first()


async def find_by_identity(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    email: str | None,
    external_id: str | None,
    exclude: uuid.UUID | None = None,
) -> RowMapping | None:
    """A profile holding this email or external id, if any."""
    conds = []
    if email is not None:
        conds.append(profiles.c.email == email)
    if external_id is not None:
        conds.append(profiles.c.external_id == external_id)
    if not conds:
        return None
    stmt = select(*PROFILE_COLUMNS).where(profiles.c.workspace_id == workspace_id)
    stmt = stmt.where(conds[0] if len(conds) == 1 else conds[0] | conds[1])
    if exclude is not None:
        stmt = stmt.where(profiles.c.id != exclude)
    return (await session.execute(stmt.limit(1))).mappings().first()


async def insert_profile(session: AsyncSession, values: dict[str, Any]) -> RowMapping:
    """Insert and return the new row."""
    stmt = profiles.insert().values(**values).returning(*PROFILE_COLUMNS)
    return (await session.execute(stmt)).mappings().one()


async def update_profile(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, values: dict[str, Any]
) -> RowMapping:
    """Apply values and return the row."""
    stmt = (
        update(profiles)
        .where(profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id)
        .values(**values)
        .returning(*PROFILE_COLUMNS)
    )
    return (await session.execute(stmt)).mappings().one()


async def anonymous_ids(session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> list[str]:
    """The anonymous ids linked to a profile."""
    stmt = (
        select(profile_aliases.c.anonymous_id)
        .where(profile_aliases.c.workspace_id == workspace_id, profile_aliases.c.profile_id == profile_id)
        .order_by(profile_aliases.c.created_at)
    )
    return list((await session.execute(stmt)).scalars())


async def latest_events(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, limit: int
) -> Sequence[RowMapping]:
    """A profile's most recent events."""
    stmt = (
        select(
            events.c.id,
            events.c.type,
            events.c.name,
            events.c.properties,
            events.c.occurred_at,
            events.c.received_at,
            events.c.message_id,
        )
        .where(and_(events.c.workspace_id == workspace_id, events.c.profile_id == profile_id))
        .order_by(events.c.occurred_at.desc())
        .limit(limit)
    )
    return (await session.execute(stmt)).mappings().all()


async def events_before(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    profile_id: uuid.UUID,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[RowMapping]:
    """A page of a profile's events, newest first, older than `before`
    (occurred_at, id): index `events_profile_time_idx`."""
    stmt = select(
        events.c.id,
        events.c.type,
        events.c.name,
        events.c.properties,
        events.c.occurred_at,
        events.c.received_at,
        events.c.message_id,
    ).where(events.c.workspace_id == workspace_id, events.c.profile_id == profile_id)
    if before is not None:
        stmt = stmt.where(tuple_(events.c.occurred_at, events.c.id) < tuple_(*before))
    stmt = stmt.order_by(events.c.occurred_at.desc(), events.c.id.desc()).limit(limit)
    return (await session.execute(stmt)).mappings().all()


async def labels(
    session: AsyncSession, workspace_id: uuid.UUID, ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """A readable name (email, else external id) of each profile that has one."""
    if not ids:
        return {}
    stmt = select(profiles.c.id, profiles.c.email, profiles.c.external_id).where(
        profiles.c.workspace_id == workspace_id, profiles.c.id.in_(ids)
    )
    rows = (await session.execute(stmt)).all()
    return {r.id: r.email or r.external_id for r in rows if r.email or r.external_id}


async def memberships(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID
) -> Sequence[RowMapping]:
    """The segments a profile is in (as of their last refresh)."""
    m = segment_memberships
    stmt = (
        select(segments.c.id, segments.c.name, m.c.entered_at)
        .join(segments, segments.c.id == m.c.segment_id)
        .where(m.c.profile_id == profile_id, m.c.workspace_id == workspace_id)
        .where(segments.c.workspace_id == workspace_id)
        .order_by(segments.c.name)
    )
    return (await session.execute(stmt)).mappings().all()


async def delete_profile(session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> int:
    """Erase a profile, its events and aliases; returns the events deleted.
    The caller holds the profile's row lock, so ingestion cannot add events
    to it meanwhile."""
    result = await session.execute(
        delete(events).where(events.c.workspace_id == workspace_id, events.c.profile_id == profile_id)
    )
    await session.execute(
        delete(profile_aliases).where(
            profile_aliases.c.workspace_id == workspace_id, profile_aliases.c.profile_id == profile_id
        )
    )
    await session.execute(
        delete(segment_memberships).where(
            segment_memberships.c.workspace_id == workspace_id, segment_memberships.c.profile_id == profile_id
        )
    )
    # Running flow enrollments of the person exit (announced, so their runs
    # stop at once); what they were given is erased with the rest.
    await flow_runs.erase_enrollments(await session.connection(), workspace_id, profile_id)
    await session.execute(
        delete(profiles).where(profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id)
    )
    return result.rowcount


async def write_profile_updated(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    profile_id: uuid.UUID,
    trait_keys: Sequence[str],
    identity: Sequence[str],
) -> None:
    """Record an API change as a `Profile Updated` event (top-level trait
    keys set or removed, identity fields changed) and announce its trait
    keys to their listeners, through the event writer."""
    now = datetime.now(UTC)
    change_id = uuid7()
    row = EventRow(
        workspace_id=workspace_id,
        profile_id=profile_id,
        name=SystemEvent.PROFILE_UPDATED.value,
        properties={"traits": list(trait_keys), "identity": list(identity), "source": "api"},
        occurred_at=now,
        message_id=profile_event_key(profile_id, change_id),
        id=change_id,
    )
    change = ProfileChange(workspace_id, profile_id, trait_keys=trait_keys, id=change_id)
    await event_writer.write(await driver_connection(session), [row], [change])


async def announce_traits(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, trait_keys: Sequence[str]
) -> None:
    """Announce the traits a new profile starts with to their listeners."""
    change = ProfileChange(workspace_id, profile_id, trait_keys=trait_keys)
    await event_writer.write(await driver_connection(session), [], [change])
