"""`/api/v1/analytics`: what the dashboard's charts read, answered from the
rollups kept by `AnalyticsRollupWorkflow` (a minute or two behind
ingestion; `as_of` says how far). Ranges are `[from, to)` in UTC, aligned
to the interval; `to` defaults to now and `from` to 30 days earlier."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from analytics import service
from analytics.schemas import EmailSeries, EventNames, EventSeries, Funnel, Interval, Overview, ProfileSeries
from api.deps import SessionDep, WorkspaceDep

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])

From = Annotated[datetime | None, Query(alias="from", description="Start of the range (UTC if no offset).")]
To = Annotated[datetime | None, Query(alias="to", description="End of the range (default: now).")]
IntervalQ = Annotated[Interval, Query(description="Bucket size: `hour` (ranges up to 31 days) or `day`.")]
EventNameQ = Annotated[str | None, Query(min_length=1, max_length=200, description="Event name.")]


@router.get("/events", response_model=EventSeries, summary="Event counts over time")
async def events(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    name: EventNameQ = None,
    interval: IntervalQ = "day",
    start: From = None,
    end: To = None,
    breakdown: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="A top-level property to break the counts down by (string and boolean values; "
            "the 8 most frequent get a line each, the rest `(other)`).",
        ),
    ] = None,
) -> EventSeries:
    """Counts of one event (or of all events) per hour or day, zeros included."""
    return await service.event_series(
        session, workspace_id, name=name, interval=interval, start=start, end=end, breakdown=breakdown
    )


@router.get("/events/names", response_model=EventNames, summary="Event names and their properties")
async def event_names(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    name: EventNameQ = None,
    start: From = None,
    end: To = None,
) -> EventNames:
    """Names seen in the range (default: 90 days), most frequent first; with
    `name`, the property keys a breakdown can use."""
    return await service.event_names(session, workspace_id, start, end, name)


@router.get("/email", response_model=EmailSeries, summary="Email engagement over time")
async def email(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    interval: IntervalQ = "day",
    start: From = None,
    end: To = None,
    flow_id: Annotated[uuid.UUID | None, Query(description="Only messages sent by this flow.")] = None,
    campaign_id: Annotated[
        uuid.UUID | None, Query(description="Only messages sent by this campaign (test sends excluded).")
    ] = None,
    provider: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Only this provider kind (ses, ...).")
    ] = None,
) -> EmailSeries:
    """Sent, delivered, opened, clicked, bounced (and complaints,
    unsubscribes) per bucket: of the workspace, or of one flow, campaign or
    provider kind (filters combine). Opens and clicks count every open and
    click; the campaign's stats (`/api/v1/campaigns/{id}/stats`) have the
    unique counts."""
    return await service.email_series(
        session,
        workspace_id,
        interval=interval,
        start=start,
        end=end,
        flow_id=flow_id,
        provider=provider,
        campaign_id=campaign_id,
    )


@router.get("/profiles", response_model=ProfileSeries, summary="New and active profiles over time")
async def profiles(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    interval: IntervalQ = "day",
    start: From = None,
    end: To = None,
) -> ProfileSeries:
    """New profiles per bucket; distinct active profiles per day (activity
    is remembered for 32 days, so later-arriving older events are not counted)."""
    return await service.profile_series(session, workspace_id, interval=interval, start=start, end=end)


@router.get("/funnel", response_model=Funnel, summary="Funnel of ordered events")
async def funnel(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    steps: Annotated[list[str], Query(max_length=6, description="2 to 6 event names, in order.")],
    window_hours: Annotated[
        int, Query(ge=1, le=24 * 90, description="Time allowed after the first step.")
    ] = 24,
    start: From = None,
    end: To = None,
) -> Funnel:
    """Profiles that did the first step in the range (at most 92 days),
    then each next step in order within the window of their first step.
    Read from the funnel rollups; exact for the events they hold (`as_of`)."""
    return await service.funnel(
        session, workspace_id, steps=steps, window_hours=window_hours, start=start, end=end
    )


@router.get("/overview", response_model=Overview, summary="Totals of a range")
async def overview(
    session: SessionDep, workspace_id: WorkspaceDep, start: From = None, end: To = None
) -> Overview:
    """Events, new profiles, today's active profiles, emails by kind, running flows."""
    return await service.overview(session, workspace_id, start=start, end=end)
