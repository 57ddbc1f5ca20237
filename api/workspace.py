"""`/api/v1/workspace`: the key's workspace and its settings."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, WorkspaceDep
from workspaces import service
from workspaces.schemas import WorkspaceSettings

router = APIRouter(prefix="/api/v1/workspace", tags=["workspace"])


@router.get("/settings", response_model=WorkspaceSettings, summary="Get workspace settings")
async def get_settings(session: SessionDep, workspace_id: WorkspaceDep) -> WorkspaceSettings:
    """Settings with defaults filled in."""
    return await service.get_workspace_settings(session, workspace_id)


@router.put("/settings", response_model=WorkspaceSettings, summary="Replace workspace settings")
async def put_settings(
    body: WorkspaceSettings, session: SessionDep, workspace_id: WorkspaceDep
) -> WorkspaceSettings:
    """E.g. `{"segment_refresh_minutes": 15}`: how often every segment of the workspace refreshes;
    `allowed_origins`: the browser origins allowed to send tracking calls (None: any);
    `frequency_cap`: `{"max_emails": 3, "period_seconds": 604800}` caps marketing email per
    person (campaigns unless they opt out, and flows without a cap of their own)."""
    return await service.update_workspace_settings(session, workspace_id, body)
