"""`/api/v1/segments`: condition trees, estimates, members, refreshes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from temporalio.service import RPCError

from api.deps import SessionDep, WorkspaceDep
from api.params import Cursor, Limit
from core.errors import ServiceUnavailable
from core.pagination import DEFAULT_LIMIT
from segments import runs, service
from segments.schemas import (
    MemberPage,
    RefreshOut,
    SegmentCreate,
    SegmentEstimate,
    SegmentEstimateRequest,
    SegmentOut,
    SegmentPage,
    SegmentUpdate,
)

router = APIRouter(prefix="/api/v1/segments", tags=["segments"])


@router.get("", response_model=SegmentPage, summary="List segments")
async def list_segments(
    session: SessionDep, workspace_id: WorkspaceDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT
) -> SegmentPage:
    """Newest first, with the member count of each segment's last refresh."""
    return await service.list_segments(session, workspace_id, cursor, limit)


@router.post("", response_model=SegmentOut, status_code=201, summary="Create a segment")
async def create_segment(body: SegmentCreate, session: SessionDep, workspace_id: WorkspaceDep) -> SegmentOut:
    """Saves the definition; its members are computed by the next refresh
    (within a minute) or by `POST /{id}/recalculate`. A bad definition is a
    422 naming the path of the bad node."""
    return await service.create_segment(session, workspace_id, body)


@router.post("/estimate", response_model=SegmentEstimate, summary="Estimate an unsaved definition")
async def estimate(
    body: SegmentEstimateRequest, session: SessionDep, workspace_id: WorkspaceDep
) -> SegmentEstimate:
    """How many profiles match right now, and a sample; nothing is saved."""
    return await service.estimate(session, workspace_id, body.definition, body.sample_size)


@router.get("/{segment_id}", response_model=SegmentOut, summary="Get a segment")
async def get_segment(segment_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> SegmentOut:
    """The definition, version, and last refresh."""
    return await service.get_segment(session, workspace_id, segment_id)


@router.patch("/{segment_id}", response_model=SegmentOut, summary="Update a segment")
async def update_segment(
    segment_id: uuid.UUID, body: SegmentUpdate, session: SessionDep, workspace_id: WorkspaceDep
) -> SegmentOut:
    """A new definition bumps the version and is refreshed at the next run."""
    return await service.update_segment(session, workspace_id, segment_id, body)


@router.delete("/{segment_id}", status_code=204, summary="Delete a segment")
async def delete_segment(segment_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """409 while another segment refers to it."""
    await service.delete_segment(session, workspace_id, segment_id)
    return Response(status_code=204)


@router.get("/{segment_id}/members", response_model=MemberPage, summary="List members")
async def members(
    segment_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> MemberPage:
    """Members as of the last refresh (or re-check), by profile id."""
    return await service.members(session, workspace_id, segment_id, cursor, limit)


@router.get("/{segment_id}/profiles/{profile_id}", summary="Is a profile in the segment now?")
async def check_profile(
    segment_id: uuid.UUID, profile_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> dict[str, object]:
    """Evaluates the definition for one profile right now (the single-profile
    check flows use), without changing stored membership."""
    conn = await session.connection()
    member, at = await service.check_profile(conn, workspace_id, segment_id, profile_id)
    return {"segment_id": segment_id, "profile_id": profile_id, "member": member, "evaluated_at": at}


@router.post("/{segment_id}/recalculate", response_model=RefreshOut, summary="Refresh a segment now")
async def recalculate(
    request: Request,
    segment_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the result")] = 10,
) -> RefreshOut:
    """Starts `SegmentRefreshWorkflow` (or joins the one running) and waits up
    to `wait` seconds: the answer carries the workflow id and, once done,
    the new member count and how many entered and exited."""
    await service.get_segment(session, workspace_id, segment_id)
    services = request.app.state.services
    client = await services.temporal.get()
    try:
        handle = await runs.start_refresh(client, services.settings, workspace_id, segment_id)
        return await runs.refresh_outcome(handle, services.settings, wait)
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not answer: {exc}") from None
