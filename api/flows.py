"""`/api/v1/flows`: flow graphs and their versions, the lifecycle,
enrollments (run by the flow runtime on Temporal) and stats."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from api.deps import SessionDep, WorkspaceDep
from api.params import Cursor, Limit
from core.pagination import DEFAULT_LIMIT
from flows import service
from flows.schemas import (
    EnrollmentDetail,
    EnrollmentPage,
    EnrollmentStatus,
    EnrollOut,
    EnrollRequest,
    FlowCreate,
    FlowOut,
    FlowPage,
    FlowStats,
    FlowUpdate,
    FlowVersionPage,
    SegmentEnrollOut,
    SegmentEnrollRequest,
)

router = APIRouter(prefix="/api/v1/flows", tags=["flows"])


@router.get("", response_model=FlowPage, summary="List flows")
async def list_flows(
    session: SessionDep, workspace_id: WorkspaceDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT
) -> FlowPage:
    """Newest first, without definitions."""
    return await service.list_flows(session, workspace_id, cursor, limit)


@router.post("", response_model=FlowOut, status_code=201, summary="Create a flow")
async def create_flow(body: FlowCreate, session: SessionDep, workspace_id: WorkspaceDep) -> FlowOut:
    """Saves a draft at version 1. A bad graph (cycle, unreachable node,
    dangling edge, unknown template or segment, …) is a 422 whose `loc`
    names the node: `body.definition.nodes.<id>`."""
    return await service.create_flow(session, workspace_id, body)


@router.get("/{flow_id}", response_model=FlowOut, summary="Get a flow")
async def get_flow(flow_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> FlowOut:
    """Status, current version and its definition."""
    return await service.get_flow(session, workspace_id, flow_id)


@router.patch("/{flow_id}", response_model=FlowOut, summary="Update a flow")
async def update_flow(
    flow_id: uuid.UUID, body: FlowUpdate, session: SessionDep, workspace_id: WorkspaceDep
) -> FlowOut:
    """A new definition of an active or paused flow is a new version (running
    enrollments finish on theirs); a draft's is replaced. Archived: 409."""
    return await service.update_flow(session, workspace_id, flow_id, body)


@router.delete("/{flow_id}", status_code=204, summary="Delete a draft flow")
async def delete_flow(flow_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """Only drafts nobody was enrolled in; archive any other flow (409)."""
    await service.delete_flow(session, workspace_id, flow_id)
    return Response(status_code=204)


@router.get("/{flow_id}/versions", response_model=FlowVersionPage, summary="List a flow's versions")
async def list_versions(
    flow_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> FlowVersionPage:
    """Immutable versions, newest first."""
    return await service.list_versions(session, workspace_id, flow_id, cursor, limit)


@router.post("/{flow_id}/activate", response_model=FlowOut, summary="Activate a flow")
async def activate(flow_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> FlowOut:
    """draft or paused → active, after validating the graph again (422 naming
    the node when a template or segment it uses was deleted)."""
    return await service.activate(session, workspace_id, flow_id)


@router.post("/{flow_id}/pause", response_model=FlowOut, summary="Pause a flow")
async def pause(flow_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> FlowOut:
    """active → paused: nobody new enters; running enrollments hold before their next send."""
    return await service.pause(session, workspace_id, flow_id)


@router.post("/{flow_id}/archive", response_model=FlowOut, summary="Archive a flow")
async def archive(flow_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> FlowOut:
    """Ends the flow for good: running enrollments exit."""
    return await service.archive(session, workspace_id, flow_id)


@router.post("/{flow_id}/enroll", response_model=EnrollOut, status_code=202, summary="Enroll a person")
async def enroll(
    request: Request, flow_id: uuid.UUID, body: EnrollRequest, session: SessionDep, workspace_id: WorkspaceDep
) -> EnrollOut:
    """Starts a run for the person (named by profile_id, email or external_id)
    with `payload`; `status` says whether it `started`, the person was
    `already_enrolled`, or re-entry `refused` them. 409 unless active."""
    services = request.app.state.services
    return await service.enroll(session, workspace_id, flow_id, body, services.temporal, services.settings)


@router.post(
    "/{flow_id}/enroll-segment",
    response_model=SegmentEnrollOut,
    status_code=202,
    summary="Enroll a segment's members",
)
async def enroll_segment(
    request: Request,
    flow_id: uuid.UUID,
    body: SegmentEnrollRequest,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> SegmentEnrollOut:
    """One-off: everyone in the segment now (as of its last refresh) is enrolled once."""
    services = request.app.state.services
    return await service.enroll_segment(
        session, workspace_id, flow_id, body, services.temporal, services.settings
    )


@router.get("/{flow_id}/enrollments", response_model=EnrollmentPage, summary="List enrollments")
async def list_enrollments(
    request: Request,
    flow_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    status: EnrollmentStatus | None = None,
    profile_id: uuid.UUID | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> EnrollmentPage:
    """Newest first, each with its current node and a link to its run in the Temporal UI."""
    return await service.list_enrollments(
        session,
        workspace_id,
        flow_id,
        request.app.state.services.settings,
        status=status,
        profile_id=profile_id,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/{flow_id}/enrollments/{enrollment_id}", response_model=EnrollmentDetail, summary="Get an enrollment"
)
async def get_enrollment(
    request: Request,
    flow_id: uuid.UUID,
    enrollment_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> EnrollmentDetail:
    """Status, payload and the steps taken so far."""
    return await service.get_enrollment(
        session, workspace_id, flow_id, enrollment_id, request.app.state.services.settings
    )


@router.post(
    "/{flow_id}/enrollments/{enrollment_id}/exit",
    response_model=EnrollmentDetail,
    status_code=202,
    summary="Make an enrollment exit",
)
async def exit_enrollment(
    request: Request,
    flow_id: uuid.UUID,
    enrollment_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> EnrollmentDetail:
    """Asks the run to exit at its next step (409 once it has ended)."""
    services = request.app.state.services
    return await service.exit_enrollment(
        session, workspace_id, flow_id, enrollment_id, services.temporal, services.settings
    )


@router.get("/{flow_id}/stats", response_model=FlowStats, summary="Flow stats")
async def stats(flow_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> FlowStats:
    """Per node: entered, waiting now, completed, failed, edges taken, emails;
    enrollments by outcome with the conversion rate; emails sent, opened, clicked."""
    return await service.stats(session, workspace_id, flow_id)
