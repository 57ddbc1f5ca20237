"""SQL for flows beyond the shared CRUD queries (db/queries.py): a flow
with its current definition, versions, reference checks, profile look-ups,
enrollments and the stats. Every statement filters on the workspace."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.tables import (
    flow_enrollments,
    flow_steps,
    flow_versions,
    flows,
    messages,
    profiles,
    segments,
    templates,
)

FLOW_COLUMNS = (
    flows.c.id,
    flows.c.name,
    flows.c.description,
    flows.c.status,
    flows.c.version,
    flows.c.created_at,
    flows.c.updated_at,
)

ENROLLMENT_COLUMNS = (
    flow_enrollments.c.id,
    flow_enrollments.c.flow_id,
    flow_enrollments.c.profile_id,
    flow_enrollments.c.version,
    flow_enrollments.c.status,
    flow_enrollments.c.current_node,
    flow_enrollments.c.enrollment_key,
    flow_enrollments.c.entered_at,
    flow_enrollments.c.updated_at,
    flow_enrollments.c.completed_at,
    flow_enrollments.c.converted_at,
    flow_enrollments.c.workflow_id,
)


# -- flows and versions ---------------------------------------------------------


async def get_flow(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, *, for_update: bool = False
) -> RowMapping | None:
    """One flow of the workspace with its current version's definition, or None."""
    stmt = (
        select(*FLOW_COLUMNS, flow_versions.c.definition)
        .join(
            flow_versions,
            and_(flow_versions.c.flow_id == flows.c.id, flow_versions.c.version == flows.c.version),
        )
        .where(flows.c.workspace_id == workspace_id, flows.c.id == flow_id)
    )
    if for_update:
        stmt = stmt.with_for_update(of=flows)
    return (await session.execute(stmt)).mappings().first()


async def insert_version(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    version: int,
    definition: dict[str, Any],
) -> None:
    """Store a version of a flow's graph."""
    await session.execute(
        flow_versions.insert().values(
            flow_id=flow_id, version=version, workspace_id=workspace_id, definition=definition
        )
    )


async def replace_version(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    version: int,
    definition: dict[str, Any],
) -> None:
    """Overwrite a version's graph (only for a draft that never ran)."""
    await session.execute(
        update(flow_versions)
        .where(
            flow_versions.c.workspace_id == workspace_id,
            flow_versions.c.flow_id == flow_id,
            flow_versions.c.version == version,
        )
        .values(definition=definition, created_at=func.now())
    )


async def latest_version(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> int:
    """The highest stored version number of a flow (0 when none)."""
    stmt = select(func.coalesce(func.max(flow_versions.c.version), 0)).where(
        flow_versions.c.workspace_id == workspace_id, flow_versions.c.flow_id == flow_id
    )
    return (await session.execute(stmt)).scalar_one()


async def list_versions(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, *, before: int | None, limit: int
) -> Sequence[RowMapping]:
    """Versions, newest first."""
    stmt = select(flow_versions.c.version, flow_versions.c.created_at, flow_versions.c.definition).where(
        flow_versions.c.workspace_id == workspace_id, flow_versions.c.flow_id == flow_id
    )
    if before is not None:
        stmt = stmt.where(flow_versions.c.version < before)
    return (
        (await session.execute(stmt.order_by(flow_versions.c.version.desc()).limit(limit))).mappings().all()
    )


async def has_enrollments(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> bool:
    """Whether anyone was ever enrolled in the flow."""
    stmt = select(flow_enrollments.c.id).where(
        flow_enrollments.c.workspace_id == workspace_id, flow_enrollments.c.flow_id == flow_id
    )
    return (await session.execute(stmt.limit(1))).first() is not None


# -- references -----------------------------------------------------------------


async def existing_templates(
    session: AsyncSession, workspace_id: uuid.UUID, ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of `ids` that are templates of the workspace."""
    if not ids:
        return set()
    stmt = select(templates.c.id).where(templates.c.workspace_id == workspace_id, templates.c.id.in_(ids))
    return {r[0] for r in await session.execute(stmt)}


async def existing_segments(
    session: AsyncSession, workspace_id: uuid.UUID, ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of `ids` that are segments of the workspace."""
    if not ids:
        return set()
    stmt = select(segments.c.id).where(segments.c.workspace_id == workspace_id, segments.c.id.in_(ids))
    return {r[0] for r in await session.execute(stmt)}


async def find_profile_id(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    profile_id: uuid.UUID | None = None,
    email: str | None = None,
    external_id: str | None = None,
) -> uuid.UUID | None:
    """The id of the workspace's profile with this id, email or external id."""
    stmt = select(profiles.c.id).where(profiles.c.workspace_id == workspace_id)
    if profile_id is not None:
        stmt = stmt.where(profiles.c.id == profile_id)
    elif email is not None:
        stmt = stmt.where(profiles.c.email == email)
    elif external_id is not None:
        stmt = stmt.where(profiles.c.external_id == external_id)
    else:
        return None
    return (await session.execute(stmt.limit(1))).scalar()


# -- enrollments ----------------------------------------------------------------


async def list_enrollments(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    *,
    status: str | None,
    profile_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[RowMapping]:
    """A flow's enrollments, newest first: by (entered_at, id), since the
    runtime derives enrollment ids from a hash, not from time."""
    e = flow_enrollments
    stmt = select(*ENROLLMENT_COLUMNS).where(e.c.workspace_id == workspace_id, e.c.flow_id == flow_id)
    if status is not None:
        stmt = stmt.where(e.c.status == status)
    if profile_id is not None:
        stmt = stmt.where(e.c.profile_id == profile_id)
    if after is not None:
        stmt = stmt.where(tuple_(e.c.entered_at, e.c.id) < tuple_(*after))
    stmt = stmt.order_by(e.c.entered_at.desc(), e.c.id.desc()).limit(limit)
    return (await session.execute(stmt)).mappings().all()


async def profile_enrollments(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, limit: int
) -> Sequence[RowMapping]:
    """A person's enrollments in every flow, newest first, with the flow's name."""
    e = flow_enrollments
    stmt = (
        select(*ENROLLMENT_COLUMNS, e.c.flow_id, flows.c.name.label("flow_name"))
        .join(flows, flows.c.id == e.c.flow_id)
        .where(e.c.workspace_id == workspace_id, e.c.profile_id == profile_id)
        .order_by(e.c.entered_at.desc(), e.c.id.desc())
        .limit(limit)
    )
    return (await session.execute(stmt)).mappings().all()


async def get_enrollment(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, enrollment_id: uuid.UUID
) -> RowMapping | None:
    """One enrollment of a flow with its payload, or None."""
    e = flow_enrollments
    stmt = select(*ENROLLMENT_COLUMNS, e.c.payload, e.c.workspace_id).where(
        e.c.workspace_id == workspace_id, e.c.flow_id == flow_id, e.c.id == enrollment_id
    )
    return (await session.execute(stmt)).mappings().first()


async def enrollment_steps(
    session: AsyncSession, workspace_id: uuid.UUID, enrollment_id: uuid.UUID
) -> Sequence[RowMapping]:
    """The steps of one enrollment, in order."""
    s, e = flow_steps, flow_enrollments
    stmt = (
        select(s.c.seq, s.c.node_id, s.c.edge, s.c.outcome, s.c.entered_at, s.c.left_at)
        .join(e, e.c.id == s.c.enrollment_id)
        .where(e.c.workspace_id == workspace_id, s.c.enrollment_id == enrollment_id)
        .order_by(s.c.seq)
    )
    return (await session.execute(stmt)).mappings().all()


# -- stats ----------------------------------------------------------------------


async def step_stats(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID
) -> Sequence[RowMapping]:
    """One statement over the flow's steps: per node (rows with `by_edge`
    false) the steps that entered, wait now (not left, enrollment still
    running), left, failed; per node and edge (`by_edge` true) how many
    left by that edge."""
    stmt = text(
        """
        SELECT s.node_id,
               s.edge,
               GROUPING(s.edge) = 0 AS by_edge,
               count(*) AS entered,
               count(*) FILTER (WHERE s.left_at IS NULL AND e.status = 'running') AS waiting,
               count(*) FILTER (WHERE s.left_at IS NOT NULL) AS completed,
               count(*) FILTER (WHERE s.outcome = 'failed') AS failed
        FROM flow_steps s
        JOIN flow_enrollments e ON e.id = s.enrollment_id
        WHERE s.flow_id = :flow AND e.workspace_id = :ws AND e.flow_id = :flow
        GROUP BY GROUPING SETS ((s.node_id), (s.node_id, s.edge))
        """
    )
    return (await session.execute(stmt, {"ws": workspace_id, "flow": flow_id})).mappings().all()


async def enrollment_stats(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> RowMapping:
    """One statement over the flow's enrollments: counts by outcome."""
    e = flow_enrollments
    converted = (e.c.converted_at.is_not(None)) | (e.c.status == "converted")
    stmt = select(
        func.count().label("enrolled"),
        func.count().filter(e.c.status == "running").label("running"),
        func.count().filter(e.c.status == "completed").label("completed"),
        func.count().filter(e.c.status == "exited").label("exited"),
        func.count().filter(e.c.status == "failed").label("failed"),
        func.count().filter(converted).label("converted"),
    ).where(e.c.workspace_id == workspace_id, e.c.flow_id == flow_id)
    return (await session.execute(stmt)).mappings().one()


async def message_stats(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID
) -> Sequence[RowMapping]:
    """One statement over the flow's messages: sent, opened, clicked per node."""
    m = messages
    stmt = (
        select(
            m.c.flow_node.label("node_id"),
            func.count().filter(m.c.sent_at.is_not(None)).label("sent"),
            func.count().filter(m.c.opened_at.is_not(None)).label("opened"),
            func.count().filter(m.c.clicked_at.is_not(None)).label("clicked"),
        )
        .where(m.c.workspace_id == workspace_id, m.c.flow_id == flow_id)
        .group_by(m.c.flow_node)
    )
    return (await session.execute(stmt)).mappings().all()
