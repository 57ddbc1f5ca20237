"""Flows: the list; a flow drawn as a graph with per-node and per-edge
counts, activate / pause, its email engagement and its enrollments with
links to their runs in the Temporal UI."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from analytics import service as analytics
from core.errors import Conflict
from definitions.flows import FlowGraph, edges
from flows import service as flows
from profiles import service as profiles
from web import charts
from web.app import render
from web.deps import FormDep, SessionDep, ViewerDep
from web.pages.common import RangeQ, lines, range_bounds

router = APIRouter()

CursorQ = Annotated[str | None, Query(max_length=200)]
StatusQ = Annotated[Literal["running", "completed", "exited", "converted", "failed"] | None, Query()]


@router.get("/flows", include_in_schema=False)
async def list_flows(
    request: Request, session: SessionDep, viewer: ViewerDep, cursor: CursorQ = None
) -> Response:
    """Newest first."""
    page = await flows.list_flows(session, viewer.workspace_id, cursor, 50)
    return render(request, "flows.html", viewer=viewer, nav="flows", page=page)


def _edge_list(definition: dict) -> dict[str, list[tuple[str, str]]]:
    try:
        graph = FlowGraph.model_validate(definition)
    except ValueError:
        return {}
    return {node.id: list(edges(node)) for node in graph.nodes}


@router.get("/flows/{flow_id}", include_in_schema=False)
async def flow(
    request: Request,
    flow_id: uuid.UUID,
    session: SessionDep,
    viewer: ViewerDep,
    cursor: CursorQ = None,
    status: StatusQ = None,
    range: RangeQ = "30d",
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """The graph with its counts, the lifecycle buttons, emails and enrollments."""
    ws = viewer.workspace_id
    settings = request.app.state.services.settings
    found = await flows.get_flow(session, ws, flow_id)
    stats = await flows.stats(session, ws, flow_id)
    enrollments = await flows.list_enrollments(
        session, ws, flow_id, settings, status=status, profile_id=None, cursor=cursor, limit=25
    )
    start, end, interval = range_bounds(range)
    email = await analytics.email_series(
        session, ws, interval=interval, start=start, end=end, flow_id=flow_id
    )
    by_node = {n.node_id: n.model_dump() for n in stats.nodes}
    people = await profiles.labels(session, ws, [e.profile_id for e in enrollments.data])
    return render(
        request,
        "flow.html",
        viewer=viewer,
        nav="flows",
        flow=found,
        stats=stats,
        graph=charts.flow_graph(found.definition, by_node, _edge_list(found.definition)),
        enrollments=enrollments,
        status=status,
        range=range,
        interval=interval,
        email=lines(email.series[:5]),
        runs_link=flows.temporal_ui_search(settings, FlowId=flow_id),
        people=people,
        notice=notice,
    )


@router.post("/flows/{flow_id}/{action}", include_in_schema=False)
async def lifecycle(
    flow_id: uuid.UUID,
    action: Literal["activate", "pause"],
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    """Activate or pause; a refusal (e.g. a template the flow names was deleted) comes back as a notice."""
    change = flows.activate if action == "activate" else flows.pause
    try:
        await change(session, viewer.workspace_id, flow_id)
    except Conflict as exc:
        return RedirectResponse(f"/flows/{flow_id}?notice={str(exc.detail)[:250]}", status_code=303)
    return RedirectResponse(f"/flows/{flow_id}", status_code=303)
