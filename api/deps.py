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
    """One transaction per request: committed when the handler returns,
    rolled back when it raises. Use it only through `SessionDep`."""
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


# scope="function": FastAPI runs the exit of a request-scoped yield
# dependency after the response is sent, so a client could read before the
# commit landed (tests/api/test_read_your_writes.py). Function scope commits
# when the handler returns, before the response goes out, and a failed
# commit becomes the response instead of being lost after a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
WorkspaceDep = Annotated[uuid.UUID, Depends(get_workspace_id)]
