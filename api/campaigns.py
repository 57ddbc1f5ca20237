"""`/api/v1/campaigns`: one-off sends to segments, each a
`CampaignSendWorkflow` on Temporal (`campaign:{id}`, search attribute
`CampaignId`), with their lifecycle, test sends, stats and recipients."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from api.deps import SessionDep, WorkspaceDep
from api.params import Cursor, Limit
from campaigns import service
from campaigns.schemas import (
    CampaignCreate,
    CampaignOut,
    CampaignPage,
    CampaignStats,
    CampaignUpdate,
    RecipientPage,
    ScheduleRequest,
    TestSendOut,
    TestSendRequest,
)
from core.pagination import DEFAULT_LIMIT

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"])


def _settings(request: Request):
    return request.app.state.services.settings


@router.get("", response_model=CampaignPage, summary="List campaigns")
async def list_campaigns(
    request: Request,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> CampaignPage:
    """Newest first, each with its progress."""
    return await service.list_campaigns(session, workspace_id, cursor, limit, _settings(request))


@router.post("", response_model=CampaignOut, status_code=201, summary="Create a campaign")
async def create_campaign(
    request: Request, body: CampaignCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> CampaignOut:
    """A draft. Content: a template (with overrides of subject, sender,
    reply-to) or inline subject/HTML/text; audience: segments minus
    excluded segments; optionally an `ab_test` (2-4 variants to a test
    share, the winner by open or click rate to the rest). A missing
    template or segment, or a variant that does not fit the content, is a
    422 naming it."""
    return await service.create_campaign(session, workspace_id, body, _settings(request))


@router.get("/{campaign_id}", response_model=CampaignOut, summary="Get a campaign")
async def get_campaign(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> CampaignOut:
    """Status, content, audience, progress and a link to its run in the Temporal UI."""
    return await service.get_campaign(session, workspace_id, campaign_id, _settings(request))


@router.patch("/{campaign_id}", response_model=CampaignOut, summary="Update a campaign")
async def update_campaign(
    request: Request,
    campaign_id: uuid.UUID,
    body: CampaignUpdate,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> CampaignOut:
    """Draft or scheduled only: 409 once the send started."""
    return await service.update_campaign(session, workspace_id, campaign_id, body, _settings(request))


@router.delete("/{campaign_id}", status_code=204, summary="Delete a campaign")
async def delete_campaign(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> Response:
    """409 while sending or paused (cancel it first); a scheduled one is cancelled."""
    services = request.app.state.services
    row = await service.get_campaign(session, workspace_id, campaign_id, services.settings)
    client = await services.temporal.get() if row.status == "scheduled" else None
    await service.delete_campaign(session, workspace_id, campaign_id, client, services.settings)
    return Response(status_code=204)


@router.post("/{campaign_id}/schedule", response_model=CampaignOut, status_code=202, summary="Schedule")
async def schedule(
    request: Request,
    campaign_id: uuid.UUID,
    body: ScheduleRequest,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> CampaignOut:
    """Send at `scheduled_at` (a time in the past is a 422); with
    `local_time`, at that wall-clock time in each recipient's timezone
    (zones where it has passed are sent to at once). A scheduled campaign
    can be moved. Starts `CampaignSendWorkflow`, which waits on a
    timer you can see in the Temporal UI."""
    services = request.app.state.services
    client = await services.temporal.get()
    return await service.schedule(
        session,
        workspace_id,
        campaign_id,
        body.scheduled_at,
        client,
        services.settings,
        local_time=body.local_time,
    )


@router.post("/{campaign_id}/send", response_model=CampaignOut, status_code=202, summary="Send now")
async def send_now(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> CampaignOut:
    """Start the send now (a draft, or a scheduled campaign brought forward)."""
    services = request.app.state.services
    client = await services.temporal.get()
    return await service.schedule(session, workspace_id, campaign_id, None, client, services.settings)


@router.post("/{campaign_id}/pause", response_model=CampaignOut, status_code=202, summary="Pause")
async def pause(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> CampaignOut:
    """sending → paused within seconds (batches in flight finish)."""
    services = request.app.state.services
    client = await services.temporal.get()
    return await service.pause(session, workspace_id, campaign_id, client, services.settings)


@router.post("/{campaign_id}/resume", response_model=CampaignOut, status_code=202, summary="Resume")
async def resume(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> CampaignOut:
    """paused → sending, from where it stopped; nobody is sent to twice."""
    services = request.app.state.services
    client = await services.temporal.get()
    return await service.resume(session, workspace_id, campaign_id, client, services.settings)


@router.post("/{campaign_id}/cancel", response_model=CampaignOut, status_code=202, summary="Cancel")
async def cancel(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> CampaignOut:
    """scheduled, sending or paused → cancelled; recipients not sent to are marked cancelled."""
    services = request.app.state.services
    client = await services.temporal.get()
    return await service.cancel(session, workspace_id, campaign_id, client, services.settings)


@router.post("/{campaign_id}/test", response_model=TestSendOut, status_code=202, summary="Send a test")
async def send_test(
    request: Request, campaign_id: uuid.UUID, body: TestSendRequest, workspace_id: WorkspaceDep
) -> TestSendOut:
    """The rendered campaign to up to five addresses now, through the
    transactional path; not counted in the campaign's stats."""
    services = request.app.state.services
    client = await services.temporal.get()
    return await service.send_test(
        services.sessionmaker, workspace_id, campaign_id, body, client, services.settings
    )


@router.get("/{campaign_id}/stats", response_model=CampaignStats, summary="Campaign stats")
async def stats(campaign_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> CampaignStats:
    """Recipients, sent, delivered, bounced, complained, unsubscribed,
    capped, unique and total opens and clicks, rates, per provider, per
    hour, and the A/B test (`ab_test`: status and winner; `variants`: each
    variant's test group and its open and click rates)."""
    return await service.stats(session, workspace_id, campaign_id)


@router.get("/{campaign_id}/recipients", response_model=RecipientPage, summary="Campaign recipients")
async def recipients(
    campaign_id: uuid.UUID,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> RecipientPage:
    """In snapshot order: status, provider, message id, opened / clicked."""
    return await service.recipients(session, workspace_id, campaign_id, cursor, limit)
