"""Email templates: list, create, edit with a rendered preview for a chosen profile."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from core.errors import AppError
from delivery import service as delivery
from delivery.schemas import PreviewRequest, TemplateCreate, TemplateUpdate
from profiles import service as profiles
from web.app import render
from web.deps import FormDep, SessionDep, ViewerDep
from web.forms import FieldErrors, build, from_app_error

router = APIRouter()

FIELDS = ("name", "subject", "from_email", "from_name", "reply_to", "html", "text")
STARTER = {
    "subject": "Welcome, {{ profile.first_name | default('there') }}!",
    "html": "<h1>Hi {{ profile.first_name | default('there') }}</h1>\n<p>Thanks for signing up.</p>\n"
    '<p><a href="https://example.com/start">Get started</a></p>\n'
    '<p style="font-size:12px"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
}
CursorQ = Annotated[str | None, Query(max_length=200)]


@router.get("/templates", include_in_schema=False)
async def list_templates(
    request: Request, session: SessionDep, viewer: ViewerDep, cursor: CursorQ = None
) -> Response:
    """Newest first."""
    page = await delivery.list_templates(session, viewer.workspace_id, cursor, 50)
    return render(request, "templates.html", viewer=viewer, nav="templates", page=page)


def _values(form: dict[str, str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in FIELDS:
        value = form.get(key, "")
        value = value if key in ("html", "text") else value.strip()
        out[key] = value or None
    return out


def _page(
    request: Request, viewer, *, template=None, values=None, errors=None, status: int = 200
) -> Response:
    return render(
        request,
        "template_form.html",
        status_code=status,
        viewer=viewer,
        nav="templates",
        template=template,
        values=values or {},
        errors=errors or {},
    )


@router.get("/templates/new", include_in_schema=False)
async def new_template(request: Request, viewer: ViewerDep) -> Response:
    """An empty form with a starter template."""
    return _page(request, viewer, values=dict(STARTER))


@router.post("/templates/new", include_in_schema=False)
async def create_template(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Save (syntax checked); the form again with messages on bad input."""
    values = _values(form)
    try:
        if problems := form.problems():
            raise FieldErrors(problems)
        created = await delivery.create_template(
            session,
            viewer.workspace_id,
            build(TemplateCreate, {k: v for k, v in values.items() if v is not None}),
        )
    except FieldErrors as exc:
        return _page(request, viewer, values=values, errors=exc.errors, status=422)
    except AppError as exc:
        field = "name" if exc.status_code == 409 else "html"
        return _page(
            request, viewer, values=values, errors=from_app_error(exc, field), status=exc.status_code
        )
    return RedirectResponse(f"/templates/{created.id}", status_code=303)


@router.get("/templates/{template_id}", include_in_schema=False)
async def edit_template(
    request: Request, template_id: uuid.UUID, session: SessionDep, viewer: ViewerDep
) -> Response:
    """The editor with the preview beside it."""
    found = await delivery.get_template(session, viewer.workspace_id, template_id)
    return _page(request, viewer, template=found, values=found.model_dump())


@router.post("/templates/{template_id}", include_in_schema=False)
async def update_template(
    request: Request, template_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Save changes."""
    found = await delivery.get_template(session, viewer.workspace_id, template_id)
    values = _values(form)
    try:
        if problems := form.problems():
            raise FieldErrors(problems)
        body = build(
            TemplateUpdate,
            {k: v for k, v in values.items() if v is not None or k in ("text", "from_name", "reply_to")},
        )
        await delivery.update_template(session, viewer.workspace_id, template_id, body)
    except FieldErrors as exc:
        return _page(request, viewer, template=found, values=values, errors=exc.errors, status=422)
    except AppError as exc:
        field = "name" if exc.status_code == 409 else "html"
        return _page(
            request,
            viewer,
            template=found,
            values=values,
            errors=from_app_error(exc, field),
            status=exc.status_code,
        )
    return RedirectResponse(f"/templates/{template_id}", status_code=303)


@router.post("/templates-preview", include_in_schema=False)
async def preview(request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep) -> Response:
    """The htmx fragment: the editor's current parts rendered for a profile
    (by email, external id or id) or a sample address."""
    who = form.get("preview_for", "").strip()
    values = _values(form)
    try:
        if problems := form.problems():
            raise FieldErrors(problems)
        request_body = PreviewRequest(email="preview@example.com")
        if who:
            found = await profiles.list_profiles(
                session,
                viewer.workspace_id,
                cursor=None,
                limit=1,
                email=who if "@" in who else None,
                external_id=None if "@" in who else who,
                trait_filters={},
            )
            if not found.data:
                raise FieldErrors({"preview_for": f"no profile with email or external id {who!r}"})
            request_body = PreviewRequest(profile_id=found.data[0].id)
        if not values["subject"] or not values["html"]:
            raise FieldErrors({"html": "fill in the subject and the HTML to preview"})
        out = await delivery.preview_draft(
            session, viewer.workspace_id, values["subject"], values["html"], values["text"], request_body
        )
    except FieldErrors as exc:
        return render(request, "template_preview.html", errors=exc.errors)
    except AppError as exc:
        return render(request, "template_preview.html", errors=from_app_error(exc, "html"))
    return render(request, "template_preview.html", preview=out, who=who)
