"""Dependencies shared by the management API's routers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

_bearer = HTTPBearer(auto_error=False, description="A secret key: `Authorization: Bearer sk_...`")


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns."""
    async with request.app.state.services.sessionmaker() as session, session.begin():
        yield session


async def get_workspace_id(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    """The workspace of the request's secret key (401 / 403 otherwise)."""
    raw = credentials.credentials if credentials else None
    client = request.client.host if request.client else None
    key = await request.app.state.services.keys.require(raw, "secret", client)
    return key.workspace_id


SessionDep = Annotated[AsyncSession, Depends(get_session)]
WorkspaceDep = Annotated[uuid.UUID, Depends(get_workspace_id)]
