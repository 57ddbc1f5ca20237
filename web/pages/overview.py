"""The overview: events, profiles, email engagement, provider health and
the running flows and campaigns."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from analytics import service as analytics
from analytics.schemas import Overview
from campaigns import service as campaigns
from definitions.campaigns import RUNNING
from delivery.health import provider_health
from flows import service as flows
from web.app import render
from web.deps import SessionDep, ViewerDep
from web.pages.common import RangeQ, lines, range_bounds

router = APIRouter()

RUNNING_SHOWN = 8


@router.get("/", include_in_schema=False)
async def overview(
    request: Request, session: SessionDep, viewer: ViewerDep, range: RangeQ = "7d"
) -> Response:
    """Totals and charts of the chosen range."""
    ws = viewer.workspace_id
    start, end, interval = range_bounds(range)
    events = await analytics.event_series(session, ws, name=None, interval=interval, start=start, end=end)
    people = await analytics.profile_series(session, ws, interval=interval, start=start, end=end)
    email = await analytics.email_series(session, ws, interval=interval, start=start, end=end)
    active_today, running_flows, as_of = await analytics.status(session, ws)
    totals = Overview(
        start=start,
        end=end,
        events=events.total.total,
        new_profiles=people.new_profiles.total,
        active_profiles_today=active_today,
        emails=email.totals,
        running_flows=running_flows,
        as_of=as_of,
    )
    providers = await provider_health(session, ws, request.app.state.services.limits)
    page = await flows.list_flows(session, ws, None, 100)
    active = [f for f in page.data if f.status == "active"][:8]
    running = [(f, await flows.stats(session, ws, f.id)) for f in active]
    in_progress = await campaigns.list_campaigns(
        session, ws, None, RUNNING_SHOWN, request.app.state.services.settings, statuses=RUNNING
    )
    return render(
        request,
        "overview.html",
        viewer=viewer,
        nav="overview",
        range=range,
        interval=interval,
        totals=totals,
        events=lines([events.total]),
        new_profiles=lines([people.new_profiles]),
        active_profiles=lines([people.active_profiles]),
        email=lines(email.series[:5]),
        providers=providers,
        running=running,
        campaigns=in_progress.data,
        more_campaigns=in_progress.next_cursor is not None,
    )
