"""The events explorer: an event's counts over time with a property
breakdown, and a funnel of ordered steps within a window."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from analytics import service as analytics
from core.errors import ValidationFailed
from web.app import render
from web.deps import SessionDep, ViewerDep
from web.pages.common import RangeQ, lines, range_bounds

router = APIRouter()

NameQ = Annotated[str | None, Query(max_length=200)]


@router.get("/events", include_in_schema=False)
async def explorer(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    name: NameQ = None,
    breakdown: Annotated[str | None, Query(max_length=100)] = None,
    range: RangeQ = "30d",
    steps: Annotated[str | None, Query(max_length=2000)] = None,
    window_hours: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """Counts of the chosen event (all events by default), optionally by a
    property; and a funnel when steps are given."""
    ws = viewer.workspace_id
    name = (name or "").strip() or None
    breakdown = (breakdown or "").strip() or None
    start, end, interval = range_bounds(range)
    names = await analytics.event_names(session, ws, None, None, name)
    series = await analytics.event_series(
        session, ws, name=name, interval=interval, start=start, end=end, breakdown=breakdown if name else None
    )
    shown = series.breakdown or [series.total]
    funnel, errors = None, {}
    window = 24
    if window_hours not in (None, ""):
        try:
            window = int(window_hours)
            if not 1 <= window <= 24 * 90:
                raise ValueError(window)
        except ValueError:
            errors["window_hours"] = "a whole number of hours from 1 to 2160"
    step_list = [s.strip() for s in (steps or "").splitlines() if s.strip()]
    if steps is not None and steps.strip() and not errors:
        try:
            funnel = await analytics.funnel(
                session, ws, steps=step_list, window_hours=window, start=start, end=end
            )
        except ValidationFailed as exc:
            errors["steps"] = "; ".join(str(d.get("msg")) for d in exc.detail)
    elif steps is not None and not steps.strip():
        errors["steps"] = "give 2 to 6 event names, one per line"
    return render(
        request,
        "events.html",
        viewer=viewer,
        nav="events",
        names=names,
        name=name,
        breakdown=breakdown,
        range=range,
        interval=interval,
        series=series,
        plot=lines(shown),
        funnel=funnel,
        steps="\n".join(step_list) if steps is not None else "",
        window_hours=window_hours if window_hours is not None else "24",
        errors=errors,
    )
