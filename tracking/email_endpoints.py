"""Email engagement on the tracking API: open pixel, click redirect,
preference page and RFC 8058 one-click unsubscribe, provider webhooks."""

from __future__ import annotations

import base64
import html
import uuid
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.errors import Unauthorized
from delivery.webhooks import WebhookRejected
from tracking.preference_page import preferences_body, unsubscribed_body

router = APIRouter(tags=["email engagement"])

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0"}
# The page's form has one field per topic (the page lists at most 200).
MAX_FORM_FIELDS = 500


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width'></head>"
        f"<body style='font-family:sans-serif;max-width:32em;margin:4em auto'>{body}</body></html>",
        status_code=status,
        headers=NO_STORE,
    )


@router.get("/o/{token}.gif", summary="Open pixel", include_in_schema=True)
async def open_pixel(request: Request, token: str) -> Response:
    """A 1×1 GIF; records `Email Opened` when the token is genuine."""
    await request.app.state.services.links.open(token)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/c/{token}", summary="Click redirect")
async def click(request: Request, token: str) -> Response:
    """Records `Email Clicked` and redirects to the link that was in the
    message; anything else is a 404 (never an open redirect)."""
    url = await request.app.state.services.links.click(token)
    if url is None:
        return _page("Link not found", "<p>This link is not valid.</p>", 404)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/u/{token}", summary="Preference page")
async def preference_page(request: Request, token: str) -> Response:
    """The workspace's topics with the person's choices, and "unsubscribe
    from all". A GET never changes anything (link scanners follow GETs)."""
    view = await request.app.state.services.preferences.view(token)
    if view is None:
        return _not_found()
    return _page("Email preferences", preferences_body(view))


@router.post("/u/{token}", summary="Save preferences, or unsubscribe (one-click, RFC 8058)")
async def unsubscribe(request: Request, token: str) -> Response:
    """Mail clients send `List-Unsubscribe=One-Click` here: the person leaves
    the message's topic at once, or every email when the message has no
    topic. The page's forms send `action=save` (with a `topic` field per
    topic kept), `action=unsubscribe_all` or `action=resubscribe_all`."""
    preferences = request.app.state.services.preferences
    raw = await request.body()
    one_click = b"List-Unsubscribe=One-Click" in raw
    action = None
    if not one_click:
        try:
            form = parse_qs(raw.decode(errors="replace"), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            return _page("Bad request", "<p>Too many fields.</p>", 400)
        action = (form.get("action") or [None])[0]
        if action == "save":
            view = await preferences.save(token, set(form.get("topic", [])))
            if view is None:
                return _not_found()
            return _page("Email preferences", preferences_body(view, "Your preferences are saved."))
        if action == "resubscribe_all":
            view = await preferences.resubscribe_all(token)
            if view is None:
                return _not_found()
            notice = "You are subscribed to all emails again."
            if view.suppressed is not None:
                notice = "You are subscribed to every topic again."
            return _page("Email preferences", preferences_body(view, notice))
    if action == "unsubscribe_all":
        outcome = await preferences.unsubscribe(token, "page", everything=True)
    else:
        # One-click, or a bare POST (an older client): the message's topic, or everything.
        outcome = await preferences.unsubscribe(token, "one-click" if one_click else "post")
    if outcome is None:
        return _not_found()
    view = await preferences.view(token)
    return _page("Unsubscribed", unsubscribed_body(outcome, view.topics if view else []))


def _not_found() -> HTMLResponse:
    return _page("Link not found", "<p>This unsubscribe link is not valid.</p>", 404)


@router.post("/webhooks/ses/{provider_id}", summary="SES events via SNS")
async def ses_webhook(request: Request, provider_id: uuid.UUID) -> dict[str, str]:
    """Subscribe an SNS topic of SES events to this URL. Unsigned or forged
    messages get 401 and change nothing."""
    try:
        outcome = await request.app.state.services.webhooks.ses(provider_id, await request.body())
    except WebhookRejected as exc:
        raise Unauthorized(str(exc)) from None
    return {"status": outcome}


@router.post("/webhooks/sendgrid/{provider_id}", summary="SendGrid Event Webhook")
async def sendgrid_webhook(request: Request, provider_id: uuid.UUID) -> dict[str, object]:
    """Point SendGrid's signed Event Webhook here (put its verification key in
    the provider's `webhook_public_key` setting)."""
    try:
        recorded = await request.app.state.services.webhooks.sendgrid(
            provider_id,
            await request.body(),
            request.headers.get("X-Twilio-Email-Event-Webhook-Signature"),
            request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp"),
        )
    except WebhookRejected as exc:
        raise Unauthorized(str(exc)) from None
    return {"status": "ok", "recorded": recorded}
