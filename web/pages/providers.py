"""Email providers: routing order and health; credentials are never shown."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from delivery.health import provider_health
from web.app import render
from web.deps import SessionDep, ViewerDep

router = APIRouter()


@router.get("/providers", include_in_schema=False)
async def providers(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """Providers by priority with breaker state, failures and rate-limit use."""
    rows = await provider_health(session, viewer.workspace_id, request.app.state.services.limits)
    return render(request, "providers.html", viewer=viewer, nav="providers", providers=rows)
