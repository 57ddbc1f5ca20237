"""Segments: the list with sizes over time, create and edit with a live
estimate, a segment's members and size chart."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from analytics import service as analytics
from core.errors import AppError
from segments import service as segments
from segments.schemas import SegmentCreate, SegmentUpdate
from web.app import render
from web.deps import FormDep, SessionDep, ViewerDep
from web.forms import FieldErrors, build, from_app_error, parse_json_field

router = APIRouter()

EXAMPLE = {
    "type": "all",
    "conditions": [
        {"type": "trait", "path": "plan", "op": "eq", "value": "pro"},
        {
            "type": "event",
            "name": "Order Completed",
            "count": {"op": ">=", "value": 1},
            "within": {"last": 30},
        },
    ],
}
# Starting points the form offers next to the editor (each replaces the tree).
STARTERS = {
    "Trait equals": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"},
    "Did an event recently": {
        "type": "event",
        "name": "Order Completed",
        "count": {"op": ">=", "value": 2},
        "within": {"last": 30},
    },
    "Has not done an event": {
        "type": "event",
        "name": "Order Completed",
        "count": {"op": "=", "value": 0},
        "within": {"last": 90},
    },
    "All of (trait and event)": EXAMPLE,
    "Any of two countries": {
        "type": "any",
        "conditions": [
            {"type": "trait", "path": "country", "op": "eq", "value": "DE"},
            {"type": "trait", "path": "country", "op": "eq", "value": "FR"},
        ],
    },
}
CursorQ = Annotated[str | None, Query(max_length=200)]


@router.get("/segments", include_in_schema=False)
async def list_segments(
    request: Request, session: SessionDep, viewer: ViewerDep, cursor: CursorQ = None
) -> Response:
    """Newest first, with member counts and their last 30 days."""
    page = await segments.list_segments(session, viewer.workspace_id, cursor, 50)
    sizes = await analytics.segment_sizes(session, viewer.workspace_id, [s.id for s in page.data])
    return render(request, "segments.html", viewer=viewer, nav="segments", page=page, sizes=sizes)


def _form_page(
    request: Request, viewer, *, segment=None, values=None, errors=None, status: int = 200
) -> Response:
    return render(
        request,
        "segment_form.html",
        status_code=status,
        viewer=viewer,
        nav="segments",
        segment=segment,
        values=values or {},
        errors=errors or {},
        starters={label: json.dumps(tree, indent=2) for label, tree in STARTERS.items()},
    )


@router.get("/segments/new", include_in_schema=False)
async def new_segment(request: Request, viewer: ViewerDep) -> Response:
    """The empty form, with an example condition tree."""
    return _form_page(request, viewer, values={"definition": json.dumps(EXAMPLE, indent=2)})


@router.post("/segments/new", include_in_schema=False)
async def create_segment(request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep) -> Response:
    """Save; the form again with messages next to the fields on bad input."""
    values = {k: form.get(k, "") for k in ("name", "description", "definition")}
    try:
        problems = form.problems()
        if problems:
            raise FieldErrors(problems)
        definition = parse_json_field("definition", values["definition"])
        body = build(
            SegmentCreate,
            {
                "name": values["name"].strip(),
                "description": values["description"].strip() or None,
                "definition": definition,
            },
        )
        created = await segments.create_segment(session, viewer.workspace_id, body)
    except FieldErrors as exc:
        return _form_page(request, viewer, values=values, errors=exc.errors, status=422)
    except AppError as exc:
        field = "name" if exc.status_code == 409 else "definition"
        return _form_page(
            request, viewer, values=values, errors=from_app_error(exc, field), status=exc.status_code
        )
    return RedirectResponse(f"/segments/{created.id}", status_code=303)


@router.post("/segments/estimate", include_in_schema=False)
async def estimate(request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep) -> Response:
    """The htmx fragment under the editor: the count now, a sample, the tree."""
    try:
        problems = form.problems()
        if problems:
            raise FieldErrors(problems)
        definition = parse_json_field("definition", form.get("definition", ""))
        result = await segments.estimate(session, viewer.workspace_id, definition, 5)
    except FieldErrors as exc:
        return render(request, "segment_estimate.html", error=exc.errors.get("definition") or exc.errors)
    except AppError as exc:
        return render(
            request, "segment_estimate.html", error="; ".join(from_app_error(exc, "definition").values())
        )
    return render(request, "segment_estimate.html", estimate=result, tree=definition)


@router.get("/segments/{segment_id}", include_in_schema=False)
async def segment(
    request: Request, segment_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, cursor: CursorQ = None
) -> Response:
    """Definition, size over time, members."""
    found = await segments.get_segment(session, viewer.workspace_id, segment_id)
    members = await segments.members(session, viewer.workspace_id, segment_id, cursor, 25)
    sizes = (await analytics.segment_sizes(session, viewer.workspace_id, [segment_id]))[segment_id]
    return render(
        request, "segment.html", viewer=viewer, nav="segments", segment=found, members=members, sizes=sizes
    )


@router.get("/segments/{segment_id}/edit", include_in_schema=False)
async def edit_segment(
    request: Request, segment_id: uuid.UUID, session: SessionDep, viewer: ViewerDep
) -> Response:
    """The form filled with the segment."""
    found = await segments.get_segment(session, viewer.workspace_id, segment_id)
    values = {
        "name": found.name,
        "description": found.description or "",
        "definition": json.dumps(found.definition, indent=2),
    }
    return _form_page(request, viewer, segment=found, values=values)


@router.post("/segments/{segment_id}/edit", include_in_schema=False)
async def update_segment(
    request: Request, segment_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Save changes (a new definition is a new version, refreshed at the next run)."""
    found = await segments.get_segment(session, viewer.workspace_id, segment_id)
    values = {k: form.get(k, "") for k in ("name", "description", "definition")}
    try:
        problems = form.problems()
        if problems:
            raise FieldErrors(problems)
        definition = parse_json_field("definition", values["definition"])
        body = build(
            SegmentUpdate,
            {
                "name": values["name"].strip(),
                "description": values["description"].strip() or None,
                "definition": definition,
            },
        )
        await segments.update_segment(session, viewer.workspace_id, segment_id, body)
    except FieldErrors as exc:
        return _form_page(request, viewer, segment=found, values=values, errors=exc.errors, status=422)
    except AppError as exc:
        field = "name" if exc.status_code == 409 else "definition"
        return _form_page(
            request,
            viewer,
            segment=found,
            values=values,
            errors=from_app_error(exc, field),
            status=exc.status_code,
        )
    return RedirectResponse(f"/segments/{segment_id}", status_code=303)
