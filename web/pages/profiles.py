"""Profiles: search by email, external id or trait; a profile's page."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from core.errors import BadRequest
from core.pagination import MAX_LIMIT
from delivery import service as delivery
from flows import service as flows
from profiles import service as profiles
from web.app import render
from web.deps import SessionDep, ViewerDep

router = APIRouter()

SearchQ = Annotated[str, Query(max_length=300, description="An email, an external id, or trait.key=value.")]
CursorQ = Annotated[str | None, Query(max_length=200)]


def _search_terms(q: str) -> tuple[dict, str | None]:
    """The list filters a search box means, and a message when it means none."""
    q = q.strip()
    if not q:
        return {}, None
    if "=" in q:
        key, _, value = q.partition("=")
        key = key.strip().removeprefix("trait.")
        try:
            return {"trait_filters": profiles.parse_trait_filters({f"trait.{key}": value.strip()})}, None
        except BadRequest as exc:  # shown next to the box
            return {}, str(getattr(exc, "detail", exc))
    if "@" in q:
        return {"email": q}, None
    return {"external_id": q}, None


@router.get("/profiles", include_in_schema=False)
async def list_profiles(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    q: SearchQ = "",
    cursor: CursorQ = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 25,
) -> Response:
    """Newest first, or those matching the search."""
    terms, error = _search_terms(q)
    page = None
    if error is None:
        page = await profiles.list_profiles(
            session,
            viewer.workspace_id,
            cursor=cursor,
            limit=limit,
            email=terms.get("email"),
            external_id=terms.get("external_id"),
            trait_filters=terms.get("trait_filters", {}),
        )
    return render(request, "profiles.html", viewer=viewer, nav="profiles", q=q, error=error, page=page)


@router.get("/profiles/{profile_id}", include_in_schema=False)
async def profile(
    request: Request, profile_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, cursor: CursorQ = None
) -> Response:
    """Traits, identities, timeline, segments, flow enrollments and messages."""
    ws = viewer.workspace_id
    settings = request.app.state.services.settings
    detail = await profiles.get_profile(session, ws, profile_id)
    timeline = await profiles.timeline(session, ws, profile_id, cursor, 25)
    if request.headers.get("hx-request"):
        return render(request, "profile_events.html", profile=detail, timeline=timeline)
    return render(
        request,
        "profile.html",
        viewer=viewer,
        nav="profiles",
        profile=detail,
        timeline=timeline,
        memberships=await profiles.memberships(session, ws, profile_id),
        enrollments=await flows.profile_enrollments(session, ws, profile_id, settings),
        messages=await delivery.profile_messages(session, ws, profile_id),
        runs_link=flows.temporal_ui_search(settings, ProfileId=profile_id),
    )
