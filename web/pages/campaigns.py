"""Campaigns: the list with each one's audience, progress and unique
open/click rates; the create form (template or inline content, audience,
schedule, throttle); a campaign's page with its actions (test-send,
schedule, send, pause, resume, cancel: the API's own service calls) and its
stats (funnel, hourly series, per provider, per A/B variant)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from campaigns import service as campaigns
from campaigns.schemas import CampaignCreate, CampaignOut, CampaignStats, ScheduleRequest, TestSendRequest
from core.errors import AppError, NotFound, ValidationFailed
from delivery import service as delivery
from delivery.schemas import PreviewRequest
from segments import service as segments
from topics import service as topics
from web.app import render
from web.charts import Line
from web.deps import FormDep, SessionDep, ViewerDep
from web.forms import FieldErrors, build, parse_json_field

router = APIRouter()

CursorQ = Annotated[str | None, Query(max_length=200)]
Done = Literal["created", "test", "scheduled", "sending", "paused", "resumed", "cancelled"]
DONE = {
    "created": "Campaign saved as a draft. Send a test, then schedule or send it.",
    "test": "Test email sent. It is not counted in this campaign's stats.",
    "scheduled": "Campaign scheduled.",
    "sending": "Sending started. The numbers below update as it goes.",
    "paused": "Paused: no new batch starts; batches in flight finish.",
    "resumed": "Resumed from where it stopped; nobody gets the email twice.",
    "cancelled": "Cancelled: nothing more is sent.",
}
FIELDS = (
    "name",
    "topic",
    "source",
    "template_id",
    "subject",
    "html",
    "text",
    "from_email",
    "from_name",
    "reply_to",
    "data",
    "when",
    "scheduled_at",
    "throttle_per_hour",
)
WHEN = ("draft", "now", "at", "local")
CONTENT_FIELDS = ("from_email", "reply_to", "subject", "html", "text")
STARTER_HTML = (
    "<h1>Hi {{ profile.first_name | default('there') }}</h1>\n"
    "<p>Our spring sale starts today: {{ data.offer | default('20% off everything') }}.</p>\n"
    '<p><a href="https://example.com/sale">Shop the sale</a></p>\n'
    '<p style="font-size:12px"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)
# Longest stretch the hourly chart draws hour by hour; longer ones by day.
MAX_HOURLY_BUCKETS = 24 * 14
MIN_HOURLY_BUCKETS = 12
LIST_PAGE = 25
RECIPIENTS_PAGE = 10
# Which outcome message still holds for which status (a reload of
# `?done=sending` after the send finished says nothing stale).
DONE_WHILE = {
    "created": ("draft",),
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
    request: Request, session: SessionDep, viewer: ViewerDep, cursor: CursorQ = None
) -> Response:
    """Newest first: status, audience, progress, unique open and click rates."""
    ws = viewer.workspace_id
    page = await campaigns.list_campaigns(session, ws, cursor, LIST_PAGE, _settings(request))
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
) -> Response:
    return render(
        request,
        "campaign_form.html",
        status_code=status,
        viewer=viewer,
        nav="campaigns",
        values=values,
        errors=errors or {},
        **await _choices(session, viewer.workspace_id),
    )


@router.get("/campaigns/new", include_in_schema=False)
async def new_campaign(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """The empty form: inline content with a starter body, saved as a draft."""
    values: dict[str, Any] = {
        "source": "inline",
        "when": "draft",
        "html": STARTER_HTML,
        "subject": "{{ profile.first_name | default('Hi') }}, the spring sale is on",
        "segment_ids": [],
        "exclude_segment_ids": [],
    }
    return await _form_page(request, session, viewer, values=values)


def _pydantic_field(loc: list[str]) -> tuple[str, str]:
    """(form field, rest of the location) of a CampaignCreate error location."""
    if loc and loc[0] in ("content", "audience") and len(loc) > 1:
        return loc[1], ".".join(loc[2:])
    if loc and loc[0] == "content":
        return "content", ""
    if loc and loc[0] == "audience":
        return "segment_ids", ""
    return (loc[0] if loc else "form"), ".".join(loc[1:])


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _field_errors(items: list[dict]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        raw = item.get("loc", "")
        loc = [str(p) for p in raw] if isinstance(raw, list | tuple) else str(raw).split(".")
        if loc and loc[0] == "body":
            loc = loc[1:]
        field, rest = _pydantic_field(loc)
        if rest.isdigit():  # segment_ids.0: the list itself
            rest = ""
        msg = _message(str(item.get("msg", "")))
        if field == "content":  # the content's own checks name the field first
            field = next((f for f in CONTENT_FIELDS if msg.startswith(f + " ")), field)
        out.setdefault(field, f"{rest}: {msg}" if rest else msg)
    return out


def _create_body(values: dict[str, Any]) -> CampaignCreate:
    try:
        return CampaignCreate.model_validate(values)
    except ValidationError as exc:
        raise FieldErrors(_field_errors(exc.errors(include_url=False, include_input=False))) from None


def _content(values: dict[str, Any]) -> dict[str, Any]:
    keys = (
        ("template_id", "subject", "from_email", "from_name", "reply_to")
        if values["source"] == "template"
        else ("subject", "html", "text", "from_email", "from_name", "reply_to")
    )
    if values["source"] == "template" and not values.get("template_id"):
        raise FieldErrors({"template_id": "choose a template, or write the email inline"})
    return {k: values[k] for k in keys if values.get(k)}


def _schedule(values: dict[str, Any]) -> ScheduleRequest | None:
    """The schedule the form asks for (None: save as a draft or send now)."""
    if values["when"] not in WHEN:
        raise FieldErrors({"when": "choose when to send"})
    if values["when"] in ("draft", "now"):
        return None
    if not values.get("scheduled_at"):
        raise FieldErrors({"scheduled_at": "pick a date and time"})
    try:
        return ScheduleRequest.model_validate(
            {"scheduled_at": values["scheduled_at"], "local_time": values["when"] == "local"}
        )
    except ValueError:
        raise FieldErrors({"scheduled_at": "not a date and time (YYYY-MM-DDTHH:MM)"}) from None


async def _form_values(request: Request, form: FormDep) -> dict[str, Any]:
    values: dict[str, Any] = {k: form.get(k, "") for k in FIELDS}
    for key in FIELDS:
        if key not in ("html", "text", "data"):
            values[key] = values[key].strip()
    data = await request.form()  # cached by Starlette: the multi-valued fields
    for key in ("segment_ids", "exclude_segment_ids"):
        values[key] = [v for v in data.getlist(key) if isinstance(v, str) and v][:50]
    values["source"] = values["source"] if values["source"] in ("template", "inline") else "inline"
    values["when"] = values["when"] or "draft"
    return values


@router.post("/campaigns/new", include_in_schema=False)
async def create_campaign(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Save the draft and, as asked, send it now or schedule it (both or
    neither: a refused schedule leaves no draft behind). The form again
    with messages next to the fields on bad input."""
    ws = viewer.workspace_id
    settings = _settings(request)
    values = await _form_values(request, form)
    try:
        problems = form.problems()
        if problems:
            raise FieldErrors(problems)
        body = _create_body(
            {
                "name": values["name"],
                "content": _content(values),
                "audience": {
                    "segment_ids": values["segment_ids"],
                    "exclude_segment_ids": values["exclude_segment_ids"],
                },
                "data": parse_json_field("data", values["data"], required=False) or {},
                "topic": values["topic"] or None,
                "throttle_per_hour": values["throttle_per_hour"] or None,
            }
        )
        when = _schedule(values)
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
    except FieldErrors as exc:
        return await _form_page(request, session, viewer, values=values, errors=exc.errors, status=422)
    except ValidationFailed as exc:
        errors = _field_errors(exc.detail if isinstance(exc.detail, list) else [{"msg": exc.detail}])
        return await _form_page(request, session, viewer, values=values, errors=errors, status=422)
    except AppError as exc:
        if exc.status_code != 409:
            raise
        return await _form_page(
            request, session, viewer, values=values, errors={"name": str(exc.detail)}, status=409
        )
    done = {"draft": "created", "now": "sending"}.get(values["when"], "scheduled")
    return RedirectResponse(f"/campaigns/{created.id}?done={done}", status_code=303)


# -- one campaign -----------------------------------------------------------------


def hourly_lines(stats: CampaignStats, now: datetime) -> tuple[list[datetime], list[Line], list[int], str]:
    """(buckets, lines, totals, interval) of the campaign's hourly series
    up to now, zeros filled in, at least the last 12 hours (so a send of the
    last hour is a point on a line, not a lone dot); by day when it spans
    more than two weeks."""
    kinds = ("sent", "delivered", "opened", "clicked", "bounced")
    if not stats.hourly:
        return [], [], [], "hour"
    hours = [h.hour.astimezone(UTC) for h in stats.hourly]
    last = max(hours[-1], now.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
    first = min(hours[0], last - timedelta(hours=MIN_HOURLY_BUCKETS - 1))
    interval, step = "hour", timedelta(hours=1)
    if (last - first) / step >= MAX_HOURLY_BUCKETS:
        interval, step = "day", timedelta(days=1)
        first, last = first.replace(hour=0), last.replace(hour=0)
    buckets: list[datetime] = []
    at = first
    while at <= last:
        buckets.append(at)
        at += step
    index = {b: i for i, b in enumerate(buckets)}
    values = {k: [0] * len(buckets) for k in kinds}
    for h, at in zip(stats.hourly, hours, strict=True):
        slot = index.get(at.replace(hour=0) if interval == "day" else at)
        if slot is not None:
            for k in kinds:
                values[k][slot] += getattr(h, k)
    lines = [Line(k.capitalize(), values[k]) for k in kinds]
    return buckets, lines, [sum(values[k]) for k in kinds], interval


def funnel(stats: CampaignStats) -> list[dict[str, Any]]:
    """Sent → delivered → opened → clicked, with the share of sent and of the step before."""
    steps = [
        ("Sent", stats.sent, "emails accepted by a provider"),
        ("Delivered", stats.delivered, "reported delivered by the provider"),
        ("Opened", stats.unique_opens, "people who opened (unique)"),
        ("Clicked", stats.unique_clicks, "people who clicked a link (unique)"),
    ]
    out = []
    for i, (label, count, hint) in enumerate(steps):
        previous = steps[i - 1][1] if i else count
        out.append(
            {
                "label": label,
                "count": count,
                "hint": hint,
                "of_sent": count / stats.sent if stats.sent else 0.0,
                "of_previous": count / previous if previous else 0.0,
            }
        )
    return out


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
    buckets, lines, totals, interval = hourly_lines(stats, datetime.now(UTC))
    preview, preview_error, preview_for = await _preview(session, ws, campaign, template, recipients.data)
    if done in DONE_WHILE and campaign.status not in DONE_WHILE[done]:
        done = None
    return render(
        request,
        "campaign.html",
        status_code=status,
        viewer=viewer,
        nav="campaigns",
        campaign=campaign,
        stats=stats,
        funnel=funnel(stats),
        hourly=(buckets, lines, totals),
        interval=interval,
        ab_test=getattr(stats, "ab_test", None),
        variants=getattr(stats, "variants", None) or [],
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
    )


async def _preview(session, ws: uuid.UUID, campaign: CampaignOut, template, recipients: list) -> tuple:
    """(rendered email, error, for whom): for the first recipient, else the
    first member of the first segment, else a sample address."""
    content = campaign.content
    subject = content.get("subject") or (template.subject if template else None)
    html = content.get("html") or (template.html if template else None)
    text = content.get("text") or (template.text if template and not content.get("html") else None)
    if not subject or not html:
        return None, "The template of this campaign was deleted; the campaign cannot be sent.", ""
    profile_id, who = None, "preview@example.com (a sample address)"
    if recipients:
        profile_id, who = recipients[0].profile_id, recipients[0].email
    elif campaign.audience.get("segment_ids"):
        try:
            members = await segments.members(
                session, ws, uuid.UUID(campaign.audience["segment_ids"][0]), None, 1
            )
        except NotFound:
            members = None
        if members and members.data:
            profile_id, who = (
                members.data[0].profile_id,
                members.data[0].email or str(members.data[0].profile_id),
            )
    request = (
        PreviewRequest(profile_id=profile_id, data=campaign.data)
        if profile_id
        else PreviewRequest(email="preview@example.com", data=campaign.data)
    )
    try:
        return await delivery.preview_draft(session, ws, subject, html, text, request), None, who
    except AppError as exc:
        return None, _detail(exc), who


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


def _addresses(text: str) -> list[str]:
    return [a for a in re.split(r"[\s,;]+", text) if a]


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
        body = build(TestSendRequest, {"emails": _addresses(values["test_emails"])})
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
            request, session, viewer, campaign_id, notice=_detail(exc), values=values, status=422
        )
    return RedirectResponse(f"/campaigns/{campaign_id}?done=test", status_code=303)


def _detail(exc: AppError) -> str:
    if isinstance(exc.detail, list):
        return "; ".join(
            _message(str(d.get("msg", d))) if isinstance(d, dict) else str(d) for d in exc.detail
        )
    return str(exc.detail)


@router.post("/campaigns/{campaign_id}/schedule", include_in_schema=False)
async def schedule(
    request: Request, campaign_id: uuid.UUID, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Schedule (or move) the send: a UTC time, or a wall-clock time in each recipient's zone."""
    values = {"when": form.get("when", "at").strip(), "scheduled_at": form.get("scheduled_at", "").strip()}
    services = request.app.state.services
    try:
        when = _schedule(values) if values["when"] in ("at", "local") else None
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
            errors={"scheduled_at": _detail(exc)},
            values=values,
            status=422,
        )
    except AppError as exc:
        if exc.status_code != 409:
            raise
        return await _campaign_page(request, session, viewer, campaign_id, notice=_detail(exc), status=409)
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
            request, session, viewer, campaign_id, notice=_detail(exc), status=exc.status_code
        )
    return RedirectResponse(f"/campaigns/{campaign_id}?done={ACTIONS[action]}", status_code=303)
