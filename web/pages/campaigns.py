"""Campaigns: the list with each one's audience, progress and unique
open/click rates; the create form (template or inline content, audience,
schedule, throttle, an A/B test of subject lines), also editing and
deleting a draft; a campaign's page with its actions (test-send, schedule,
send, pause, resume, cancel: the API's own service calls) and its stats
(funnel, hourly series, per provider, per A/B variant)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from campaigns import service as campaigns
from campaigns.schemas import CampaignCreate, CampaignOut, CampaignUpdate, TestSendRequest
from core.errors import AppError, NotFound, ValidationFailed
from definitions.campaigns import RUNNING
from delivery import service as delivery
from segments import service as segments
from topics import service as topics
from web.app import render
from web.deps import FormDep, SessionDep, ViewerDep
from web.forms import FieldErrors, build
from web.pages import campaign_form as form_parts
from web.pages import campaign_stats

router = APIRouter()

CursorQ = Annotated[str | None, Query(max_length=200)]
Done = Literal["created", "saved", "test", "scheduled", "sending", "paused", "resumed", "cancelled"]
DONE = {
    "created": "Campaign saved as a draft. Send a test, then schedule or send it.",
    "saved": "Changes saved.",
    "test": "Test email sent. It is not counted in this campaign's stats.",
    "scheduled": "Campaign scheduled.",
    "sending": "Sending started. The numbers below update as it goes.",
    "paused": "Paused: no new batch starts; batches in flight finish.",
    "resumed": "Resumed from where it stopped; nobody gets the email twice.",
    "cancelled": "Cancelled: nothing more is sent.",
}
LIST_PAGE = 25
STARTING_WITHIN = timedelta(minutes=1)
RECIPIENTS_PAGE = 10
# Which outcome message still holds for which status (a reload of
# `?done=sending` after the send finished says nothing stale).
DONE_WHILE = {
    "created": ("draft",),
    "saved": ("draft",),
    "scheduled": ("scheduled",),
    "sending": ("scheduled", "sending"),
    "paused": ("paused",),
    "resumed": ("sending",),
    "cancelled": ("cancelled",),
}


def _settings(request: Request):
    return request.app.state.services.settings


async def _audience_names(session, ws: uuid.UUID, rows: list[CampaignOut]) -> dict[str, str]:
    """Segment name by id (as the audience stores it, a string)."""
    ids = [
        uuid.UUID(str(s))
        for c in rows
        for s in (*c.audience.get("segment_ids", []), *c.audience.get("exclude_segment_ids", []))
    ]
    return {str(k): v for k, v in (await segments.names(session, ws, ids)).items()}


@router.get("/campaigns", include_in_schema=False)
async def list_campaigns(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    cursor: CursorQ = None,
    status: Annotated[Literal["running"] | None, Query()] = None,
    done: Annotated[Literal["deleted"] | None, Query()] = None,
) -> Response:
    """Newest first (or only those not finished): status, audience,
    progress, unique open and click rates."""
    ws = viewer.workspace_id
    statuses = RUNNING if status == "running" else None
    page = await campaigns.list_campaigns(session, ws, cursor, LIST_PAGE, _settings(request), statuses)
    engagement = await campaigns.engagement(session, ws, [c.id for c in page.data])
    names = await _audience_names(session, ws, page.data)
    ready = None
    if not page.data:
        ready = {
            "segments": bool((await segments.list_segments(session, ws, None, 1)).data),
            "providers": bool(
                (await delivery.list_providers(session, ws, None, 1, _settings(request).tracking_url)).data
            ),
        }
    return render(
        request,
        "campaigns.html",
        viewer=viewer,
        nav="campaigns",
        page=page,
        engagement=engagement,
        names=names,
        ready=ready,
        cursor=cursor,
        status=status,
        done="Draft deleted." if done else None,
    )


# -- create -----------------------------------------------------------------------


async def _choices(session, ws: uuid.UUID) -> dict[str, Any]:
    return {
        "templates": (await delivery.list_templates(session, ws, None, 100)).data,
        "segments": (await segments.list_segments(session, ws, None, 200)).data,
        "topics": (await topics.list_topics(session, ws, None, 100)).data,
    }


async def _form_page(
    request: Request,
    session,
    viewer,
    *,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    status: int = 200,
    editing: CampaignOut | None = None,
) -> Response:
    return render(
        request,
        "campaign_form.html",
        status_code=status,
        viewer=viewer,
        nav="campaigns",
        values=values,
        errors=errors or {},
        editing=editing,
        **await _choices(session, viewer.workspace_id),
    )


@router.get("/campaigns/new", include_in_schema=False)
async def new_campaign(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """The empty form: inline content with a starter body, saved as a draft."""
    values: dict[str, Any] = {
        "source": "inline",
        "when": "draft",
        "html": form_parts.STARTER_HTML,
        "subject": "{{ profile.first_name | default('Hi') }}, the spring sale is on",
        "segment_ids": [],
        "exclude_segment_ids": [],
    }
    return await _form_page(request, session, viewer, values=values)


@router.post("/campaigns/new", include_in_schema=False)
async def create_campaign(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Save the draft and, as asked, send it now or schedule it (both or
    neither: a refused schedule leaves no draft behind). The form again
    with messages next to the fields on bad input."""
    ws = viewer.workspace_id
    settings = _settings(request)
    values = await form_parts.form_values(request, form)
    try:
        problems = form.problems()
        if problems:
            raise FieldErrors(problems)
        body = form_parts.request_body(CampaignCreate, form_parts.body_values(values))
        when = form_parts.schedule(values)
        async with session.begin_nested():
            created = await campaigns.create_campaign(session, ws, body, settings)
            if values["when"] != "draft":
                client = await request.app.state.services.temporal.get()
                await campaigns.schedule(
                    session,
                    ws,
                    created.id,
                    when.scheduled_at if when else None,
                    client,
                    settings,
                    local_time=bool(when and when.local_time),
                )
    except (FieldErrors, AppError) as exc:
        return await _refused_form(request, session, viewer, values, exc)
    done = {"draft": "created", "now": "sending"}.get(values["when"], "scheduled")
    return RedirectResponse(f"/campaigns/{created.id}?done={done}", status_code=303)


async def _refused_form(
    request: Request,
    session,
    viewer,
    values: dict[str, Any],
    exc: Exception,
    editing: CampaignOut | None = None,
) -> Response:
    """The form again with the refusal next to its fields: the form's own
    checks and the service's validation (422), a taken name (409)."""
    if isinstance(exc, FieldErrors):
        errors, status = exc.errors, 422
    elif isinstance(exc, ValidationFailed):
        errors = form_parts.field_errors(
            exc.detail if isinstance(exc.detail, list) else [{"msg": exc.detail}]
        )
        status = 422
    elif isinstance(exc, AppError) and exc.status_code == 409:
        errors, status = {"name": str(exc.detail)}, 409
    else:
        raise exc
    return await _form_page(
        request, session, viewer, values=values, errors=errors, status=status, editing=editing
    )


# -- edit and delete a draft -------------------------------------------------------


async def _draft(request: Request, session, viewer, campaign_id: uuid.UUID) -> CampaignOut | Response:
    """The campaign if it is a draft; else its page saying why it cannot be changed (409)."""
    found = await campaigns.get_campaign(session, viewer.workspace_id, campaign_id, _settings(request))
    if found.status == "draft":
        return found
    notice = f"This campaign is {found.status}: only a draft can be edited or deleted."
    return await _campaign_page(request, session, viewer, campaign_id, notice=notice, status=409)


@router.get("/campaigns/{campaign_id}/edit", include_in_schema=False)
async def edit_campaign(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, viewer: ViewerDep
) -> Response:
    """The draft's form, filled in."""
    draft = await _draft(request, session, viewer, campaign_id)
    if isinstance(draft, Response):
        return draft
    return await _form_page(request, session, viewer, values=form_parts.values_of(draft), editing=draft)


@router.post("/campaigns/{campaign_id}/edit", include_in_schema=False)
async def update_campaign(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Save the draft's changes (the API's update); the form again with
    messages next to the fields on bad input."""
    draft = await _draft(request, session, viewer, campaign_id)
    if isinstance(draft, Response):
        return draft
    values = await form_parts.form_values(request, form)
    values["ab_locked"] = form_parts.values_of(draft).get("ab_locked", False)
    try:
        problems = form.problems()
        if problems:
            raise FieldErrors(problems)
        body = form_parts.request_body(CampaignUpdate, form_parts.body_values(values))
        async with session.begin_nested():
            await campaigns.update_campaign(
                session, viewer.workspace_id, campaign_id, body, _settings(request)
            )
    except (FieldErrors, AppError) as exc:
        return await _refused_form(request, session, viewer, values, exc, editing=draft)
    return RedirectResponse(f"/campaigns/{campaign_id}?done=saved", status_code=303)


@router.post("/campaigns/{campaign_id}/delete", include_in_schema=False)
async def delete_campaign(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Delete the draft (the API's delete), back to the list."""
    draft = await _draft(request, session, viewer, campaign_id)
    if isinstance(draft, Response):
        return draft
    await campaigns.delete_campaign(session, viewer.workspace_id, campaign_id, None, _settings(request))
    return RedirectResponse("/campaigns?done=deleted", status_code=303)


# -- one campaign -----------------------------------------------------------------


async def _campaign_page(
    request: Request,
    session,
    viewer,
    campaign_id: uuid.UUID,
    *,
    cursor: str | None = None,
    done: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    ws = viewer.workspace_id
    settings = _settings(request)
    campaign = await campaigns.get_campaign(session, ws, campaign_id, settings)
    stats = await campaigns.stats(session, ws, campaign_id)
    recipients = await campaigns.recipients(session, ws, campaign_id, cursor, RECIPIENTS_PAGE)
    names = await _audience_names(session, ws, [campaign])
    template = None
    if campaign.content.get("template_id"):
        try:
            template = await delivery.get_template(session, ws, uuid.UUID(campaign.content["template_id"]))
        except NotFound:
            template = None
    buckets, lines, totals, interval = campaign_stats.hourly_lines(stats, datetime.now(UTC))
    preview, preview_error, preview_for = await campaign_stats.preview(
        session, ws, campaign, template, recipients.data
    )
    if done in DONE_WHILE and campaign.status not in DONE_WHILE[done]:
        done = None
    now = datetime.now(UTC)
    # Sent now (or due): the workflow starts it within seconds; the page follows it.
    starting = (
        campaign.status == "scheduled"
        and not campaign.local_time
        and campaign.scheduled_at is not None
        and campaign.scheduled_at <= now + STARTING_WITHIN
    )
    return render(
        request,
        "campaign.html",
        status_code=status,
        viewer=viewer,
        nav="campaigns",
        campaign=campaign,
        stats=stats,
        funnel=campaign_stats.funnel(stats),
        hourly=(buckets, lines, totals),
        interval=interval,
        ab_test=stats.ab_test.model_dump() if stats.ab_test else None,
        variants=[v.model_dump() for v in stats.variants],
        recipients=recipients,
        preview=preview,
        preview_error=preview_error,
        preview_for=preview_for,
        names=names,
        template=template,
        done=DONE.get(done or ""),
        notice=notice,
        errors=errors or {},
        values=values or {},
        cursor=cursor,
        starting=starting,
    )


@router.get("/campaigns/{campaign_id}", include_in_schema=False)
async def campaign(
    request: Request,
    campaign_id: uuid.UUID,
    session: SessionDep,
    viewer: ViewerDep,
    cursor: CursorQ = None,
    done: Annotated[Done | None, Query()] = None,
) -> Response:
    """The campaign, its actions and its stats."""
    return await _campaign_page(request, session, viewer, campaign_id, cursor=cursor, done=done)


@router.post("/campaigns/{campaign_id}/test", include_in_schema=False)
async def test_send(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Send the rendered campaign to a few addresses (the API's test send)."""
    values = {"test_emails": form.get("test_emails", "")}
    services = request.app.state.services
    try:
        if form.problems():
            raise FieldErrors({"test_emails": "not text that can be stored"})
        body = build(TestSendRequest, {"emails": form_parts.addresses(values["test_emails"])})
        await campaigns.get_campaign(session, viewer.workspace_id, campaign_id, services.settings)
        client = await services.temporal.get()
        await campaigns.send_test(
            services.sessionmaker, viewer.workspace_id, campaign_id, body, client, services.settings
        )
    except FieldErrors as exc:
        message = "; ".join(exc.errors.values())
        return await _campaign_page(
            request,
            session,
            viewer,
            campaign_id,
            errors={"test_emails": message},
            values=values,
            status=422,
        )
    except ValidationFailed as exc:
        return await _campaign_page(
            request, session, viewer, campaign_id, notice=form_parts.detail(exc), values=values, status=422
        )
    return RedirectResponse(f"/campaigns/{campaign_id}?done=test", status_code=303)


@router.post("/campaigns/{campaign_id}/schedule", include_in_schema=False)
async def schedule(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Schedule (or move) the send: a UTC time, or a wall-clock time in each recipient's zone."""
    values = {"when": form.get("when", "at").strip(), "scheduled_at": form.get("scheduled_at", "").strip()}
    services = request.app.state.services
    try:
        when = form_parts.schedule(values) if values["when"] in ("at", "local") else None
        if when is None:
            raise FieldErrors({"when": "choose a time in UTC or in each recipient's timezone"})
        client = await services.temporal.get()
        async with session.begin_nested():
            await campaigns.schedule(
                session,
                viewer.workspace_id,
                campaign_id,
                when.scheduled_at,
                client,
                services.settings,
                local_time=when.local_time,
            )
    except FieldErrors as exc:
        return await _campaign_page(
            request, session, viewer, campaign_id, errors=exc.errors, values=values, status=422
        )
    except ValidationFailed as exc:
        return await _campaign_page(
            request,
            session,
            viewer,
            campaign_id,
            errors={"scheduled_at": form_parts.detail(exc)},
            values=values,
            status=422,
        )
    except AppError as exc:
        if exc.status_code != 409:
            raise
        return await _campaign_page(
            request, session, viewer, campaign_id, notice=form_parts.detail(exc), status=409
        )
    return RedirectResponse(f"/campaigns/{campaign_id}?done=scheduled", status_code=303)


ACTIONS = {
    "send": "sending",
    "pause": "paused",
    "resume": "resumed",
    "cancel": "cancelled",
}


@router.post("/campaigns/{campaign_id}/{action}", include_in_schema=False)
async def lifecycle(
    request: Request,
    campaign_id: uuid.UUID,
    action: Literal["send", "pause", "resume", "cancel"],
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    """Send now, pause, resume or cancel; a refusal (e.g. pausing a
    finished send) is a notice on the campaign's page."""
    services = request.app.state.services
    ws = viewer.workspace_id
    await campaigns.get_campaign(session, ws, campaign_id, services.settings)  # 404 before Temporal
    client = await services.temporal.get()
    try:
        # A refusal rolls back to here: the service changes the row before it signals.
        async with session.begin_nested():
            if action == "send":
                await campaigns.schedule(session, ws, campaign_id, None, client, services.settings)
            else:
                change = {"pause": campaigns.pause, "resume": campaigns.resume, "cancel": campaigns.cancel}
                await change[action](session, ws, campaign_id, client, services.settings)
    except AppError as exc:
        if exc.status_code not in (409, 422):
            raise
        return await _campaign_page(
            request, session, viewer, campaign_id, notice=form_parts.detail(exc), status=exc.status_code
        )
    return RedirectResponse(f"/campaigns/{campaign_id}?done={ACTIONS[action]}", status_code=303)
