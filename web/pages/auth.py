"""Sign in with a workspace secret key; sign out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from core.errors import Forbidden, TooManyRequests, Unauthorized
from web.app import render
from web.deps import FormDep
from web.session import COOKIE, LIFETIME_SECONDS, LOGIN_CSRF_COOKIE, csrf_matches

router = APIRouter()


def _safe_next(target: str | None) -> str:
    # Only paths of this site: never an absolute URL (open redirect).
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:500]


def _login_page(request: Request, status: int = 200, error: str | None = None, next_: str = "/") -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status_code=status, error=error, csrf=token, next=next_)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    return _login_page(request, next_=_safe_next(next))


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    key: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the key; a secret key of an existing workspace starts a session."""
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        return _login_page(request, 403, "The form expired; please sign in again.", _safe_next(next))
    key = key.strip()
    if len(key) > 200:
        return _login_page(
            request, 422, "That is too long to be a key; keys are about 50 characters.", _safe_next(next)
        )
    if not key:
        return _login_page(
            request, 422, "Paste your workspace's secret key (it starts with sk_).", _safe_next(next)
        )
    services = request.app.state.services
    client = request.client.host if request.client else None
    try:
        row = await services.keys.require(key, "secret", client)
    except Forbidden:
        return _login_page(
            request,
            403,
            "That is a public key (pk_…), which only sends events. Sign in with the secret key (sk_…).",
            _safe_next(next),
        )
    except TooManyRequests:
        return _login_page(
            request, 429, "Too many wrong keys from this address; wait a few seconds.", _safe_next(next)
        )
    except Unauthorized:
        return _login_page(
            request,
            401,
            "This key is not valid: it may be mistyped or revoked. `./mp up` prints the default workspace's "
            "secret key; `./mp keys create` makes a new one.",
            _safe_next(next),
        )
    cookie, _ = services.signer.issue(row.workspace_id, row.id)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=LIFETIME_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout", include_in_schema=False)
async def logout(form: FormDep) -> Response:
    """End the session (the form carries the CSRF token)."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
