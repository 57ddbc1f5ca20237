"""What the flows API asks of the runtime: keep the outbox listening for
what flows need, enroll people (one, or a segment's members), and ask
running enrollments to exit.

Exits go through the outbox (an `$exit` row in the same transaction that
marks the enrollment exited), so the request reaches the run even when
Temporal is briefly down, and the run stops at once, even mid-wait."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.errors import Conflict, NotFound, ServiceUnavailable
from core.ids import uuid7
from core.settings import Settings
from core.temporal import WorkflowStart, start_or_join
from definitions.events import Consumer, SystemEvent
from definitions.flow_runs import EXIT_ANNOUNCEMENT, RESUME_ANNOUNCEMENT
from definitions.flows import EventTrigger, FlowGraph, SegmentTrigger, SendEmailNode, listened_events
from flows import runs_repository as repo
from flows.consumer import reentry_allows, start_delivery


class EnrollResult(BaseModel):
    """What an enrollment request came to: `started`, `already_enrolled`
    (a run of this person is in progress) or `refused` (re-entry)."""

    enrollment_id: uuid.UUID | None
    workflow_id: str
    status: str


class BulkEnrollResult(BaseModel):
    """Counts of a one-off segment enrollment."""

    enrolled: int
    already_enrolled: int
    refused: int


def trigger_names(graph: FlowGraph) -> set[str]:
    """Event names that can start an enrollment of this graph."""
    trigger = graph.trigger
    if isinstance(trigger, EventTrigger):
        return {trigger.name}
    if isinstance(trigger, SegmentTrigger):
        event = SystemEvent.SEGMENT_ENTERED if trigger.on == "entered" else SystemEvent.SEGMENT_EXITED
        return {event.value}
    return set()


async def flow_changed(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """After a flow's status or version changed: the outbox listens for the
    triggers of active flows and for everything running enrollments wait
    for; an archived flow's running enrollments are asked to exit."""
    conn = await session.connection()
    names: set[str] = set()
    for definition, takes_new in await repo.listening_definitions(conn, workspace_id):
        graph = FlowGraph.model_validate(definition)
        names |= listened_events(graph)
        if takes_new:
            names |= trigger_names(graph)
    status = await repo.flow_status(conn, workspace_id, flow_id)
    if status == "archived":
        running = await repo.running_of_flow(conn, workspace_id, flow_id)
        await request_exits(session, workspace_id, [r["id"] for r in running])
    elif status == "active":
        await _announce_resumes(session, workspace_id, flow_id)
    await repo.sync_listeners(conn, workspace_id, names, Consumer.FLOWS.value)


async def _announce_resumes(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """Running enrollments standing at a send (held there by a pause) are
    told the flow runs again."""
    conn = await session.connection()
    held: list[uuid.UUID] = []
    graphs: dict[int, set[str]] = {}
    for row in await repo.running_at_nodes(conn, workspace_id, flow_id):
        if row["version"] not in graphs:
            graph = FlowGraph.model_validate(row["definition"])
            graphs[row["version"]] = {n.id for n in graph.nodes if isinstance(n, SendEmailNode)}
        if row["current_node"] in graphs[row["version"]]:
            held.append(row["id"])
    if held:
        await repo.announce(conn, workspace_id, held, RESUME_ANNOUNCEMENT)


async def request_exits(
    session: AsyncSession, workspace_id: uuid.UUID, enrollment_ids: list[uuid.UUID]
) -> None:
    """Mark running enrollments exited and announce it to their runs."""
    if not enrollment_ids:
        return
    conn = await session.connection()
    await repo.announce(conn, workspace_id, enrollment_ids, EXIT_ANNOUNCEMENT)
    await repo.mark_exited(conn, workspace_id, enrollment_ids)


async def exit_enrollment(
    client: Client, session: AsyncSession, workspace_id: uuid.UUID, enrollment: Any
) -> None:
    """`POST …/enrollments/:id/exit`: 409 unless it is running."""
    if enrollment["status"] != "running":
        raise Conflict(f"enrollment {enrollment['id']} is {enrollment['status']}, not running")
    await request_exits(session, workspace_id, [enrollment["id"]])


async def _current(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID
) -> tuple[int, FlowGraph]:
    conn = await session.connection()
    row = (
        await conn.execute(
            text(
                "SELECT f.status, f.version, v.definition FROM flows f "
                "JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version "
                "WHERE f.workspace_id = :w AND f.id = :f"
            ),
            {"w": workspace_id, "f": flow_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"no flow {flow_id} in this workspace")
    if row[0] != "active":
        raise Conflict(f"flow {flow_id} is {row[0]}; activate it to enroll people")
    return row[1], FlowGraph.model_validate(row[2])


async def _start(
    client: Client,
    settings: Settings,
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    version: int,
    graph: FlowGraph,
    profile_id: uuid.UUID,
    payload: dict[str, Any],
) -> EnrollResult:
    conn = await session.connection()
    latest = await repo.earlier_enrollments(conn, [(flow_id, profile_id, "")])
    delivery = start_delivery(
        workspace_id,
        flow_id,
        version,
        graph,
        profile_id,
        "",
        None,
        [],
        cause=f"api:{uuid7()}",
        payload=payload,
    )
    run = delivery.arg
    assert run is not None
    if await repo.is_running(conn, flow_id, profile_id, ""):
        return EnrollResult(enrollment_id=None, workflow_id=delivery.workflow_id, status="already_enrolled")
    if not reentry_allows(graph, latest.get((flow_id, profile_id, "")), datetime.now(UTC)):
        return EnrollResult(enrollment_id=None, workflow_id=delivery.workflow_id, status="refused")
    start = WorkflowStart(delivery.workflow, run, id=delivery.workflow_id, search_attributes=delivery.search)
    try:
        outcome = await start_or_join(client, start, settings.temporal_task_queue)
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"could not start the enrollment on Temporal: {exc.detail}; retry") from None
    if not outcome.started:
        return EnrollResult(enrollment_id=None, workflow_id=delivery.workflow_id, status="already_enrolled")
    return EnrollResult(enrollment_id=run.enrollment_id, workflow_id=delivery.workflow_id, status="started")


async def enroll(
    client: Client,
    settings: Settings,
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    profile_id: uuid.UUID,
    payload: dict[str, Any],
) -> EnrollResult:
    """Enroll one person now (`POST /flows/:id/enroll`)."""
    version, graph = await _current(session, workspace_id, flow_id)
    return await _start(client, settings, session, workspace_id, flow_id, version, graph, profile_id, payload)


async def enroll_segment(
    client: Client,
    settings: Settings,
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    segment_id: uuid.UUID,
) -> BulkEnrollResult:
    """Enroll a segment's current members (as of its last refresh), once."""
    version, graph = await _current(session, workspace_id, flow_id)
    conn = await session.connection()
    members = [
        r[0]
        for r in await conn.execute(
            text("SELECT profile_id FROM segment_memberships WHERE workspace_id = :w AND segment_id = :s"),
            {"w": workspace_id, "s": segment_id},
        )
    ]
    counts = {"started": 0, "already_enrolled": 0, "refused": 0}
    # One at a time: the re-entry pre-checks share the request's session.
    for profile_id in members:
        result = await _start(
            client, settings, session, workspace_id, flow_id, version, graph, profile_id, {}
        )
        counts[result.status] += 1
    return BulkEnrollResult(
        enrolled=counts["started"], already_enrolled=counts["already_enrolled"], refused=counts["refused"]
    )
