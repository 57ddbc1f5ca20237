"""What every dashboard page depends on: the signed-in viewer (or a
redirect to the sign-in page), the request's database transaction, and
CSRF-checked form fields."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from definitions.limits import Unstorable, check_json
from web.session import COOKIE, csrf_matches
from workspaces import repository as workspace_repo

MAX_FIELD_CHARS = 200_000


class NotSignedIn(Exception):
    """No valid session: the page redirects to the sign-in form."""


class CsrfRejected(Exception):
    """A form without the session's CSRF token."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in workspace."""

    workspace_id: uuid.UUID
    workspace_name: str
    csrf: str


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the handler returns
    (before the response, as the API does)."""
    async with request.app.state.services.sessionmaker() as session, session.begin():
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_viewer(request: Request, session: SessionDep) -> Viewer:
    """The session's workspace; NotSignedIn when there is none or its key was revoked."""
    services = request.app.state.services
    web_session = services.signer.read(request.cookies.get(COOKIE))
    if web_session is None:
        raise NotSignedIn
    found = await workspace_repo.session_key(session, web_session.key_id)
    if found is None or found[0] != web_session.workspace_id:
        raise NotSignedIn
    return Viewer(found[0], found[1], web_session.csrf)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


class Form(dict[str, str]):
    """Submitted fields (last value of each name), already checked for CSRF
    and for text PostgreSQL can store."""

    def problems(self) -> dict[str, str]:
        """Field → message for values that cannot be stored (NUL, lone surrogates, huge)."""
        out: dict[str, str] = {}
        for name, value in self.items():
            if len(value) > MAX_FIELD_CHARS:
                out[name] = f"at most {MAX_FIELD_CHARS:,} characters"
                continue
            try:
                check_json(value)
            except Unstorable as exc:
                out[name] = str(exc)
        return out


async def read_form(request: Request, viewer: ViewerDep) -> Form:
    """The form of a POST whose CSRF token (field `csrf` or header
    `X-CSRF-Token`) matches the session's; CsrfRejected otherwise."""
    data = await request.form()
    fields = Form({k: v for k, v in data.items() if isinstance(v, str)})
    given = fields.pop("csrf", None) or request.headers.get("x-csrf-token")
    if not csrf_matches(viewer.csrf, given):
        raise CsrfRejected
    return fields


FormDep = Annotated[Form, Depends(read_form)]
