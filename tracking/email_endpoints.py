"""Email engagement on the tracking API: open pixel, click redirect,
unsubscribe page and RFC 8058 one-click unsubscribe, provider webhooks."""

from __future__ import annotations

import base64
import html
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from core.errors import Unauthorized
from delivery.webhooks import WebhookRejected

router = APIRouter(tags=["email engagement"])

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0"}


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


@router.get("/u/{token}", summary="Unsubscribe page")
async def unsubscribe_page(request: Request, token: str) -> Response:
    """Asks for confirmation (link scanners follow GETs, so a GET never unsubscribes)."""
    message = await request.app.state.services.links.message_for_unsubscribe(token)
    if message is None:
        return _page("Link not found", "<p>This unsubscribe link is not valid.</p>", 404)
    address = html.escape(message["email"])
    return _page(
        "Unsubscribe",
        f"<h1>Unsubscribe</h1><p>Stop emails to <b>{address}</b>?</p>"
        f"<form method='post'><button type='submit'>Unsubscribe</button></form>",
    )


@router.post("/u/{token}", summary="Unsubscribe (one-click, RFC 8058)")
async def unsubscribe(request: Request, token: str) -> Response:
    """Suppresses the address for every provider and records `Email Unsubscribed`.
    Mail clients send `List-Unsubscribe=One-Click` here; the page's button too."""
    form = (await request.body()).decode(errors="replace")
    method = "one-click" if "List-Unsubscribe=One-Click" in form else "page"
    message = await request.app.state.services.links.unsubscribe(token, method)
    if message is None:
        return _page("Link not found", "<p>This unsubscribe link is not valid.</p>", 404)
    return _page(
        "Unsubscribed",
        f"<h1>Unsubscribed</h1><p>{html.escape(message['email'])} will get no more emails.</p>",
    )


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
