"""`Email …` events, written by the send path, by our links and by
provider webhooks, are announced to the consumers that listen for them,
once each, through the one event writer."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import text

from definitions.events import SystemEvent
from delivery import repository as repo
from delivery.engagement import record
from tests.delivery.conftest import add_sendgrid, make_template, send
from tests.support.outbox import announced, listen

PROBE = "probe"
EMAIL_EVENTS = [e for e in SystemEvent if e.value.startswith("Email ")]


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def test_email_events_are_announced_once_from_every_path(
    api, tracking_app, worker, sendgrid, engine, workspace
):
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, events=EMAIL_EVENTS)
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    message = await send(api, template["id"], "listener@example.com")
    assert message["status"] == "sent"
    payload = sendgrid.received[-1]
    html = next(c["value"] for c in payload["content"] if c["type"] == "text/html")
    pixel = re.search(r'src="([^"]+/o/[^"]+\.gif)"', html).group(1)
    click = re.search(r"href=['\"]([^'\"]+/c/[^'\"]+)['\"]", html).group(1)
    unsubscribe = payload["headers"]["List-Unsubscribe"].strip("<>")
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        assert (await client.get(_path(pixel))).status_code == 200
        assert (await client.get(_path(click))).status_code == 302
        for _ in range(2):  # a repeated one-click unsubscribe is recorded once
            done = await client.post(_path(unsubscribe), content=b"List-Unsubscribe=One-Click")
            assert done.status_code == 200
    # Provider events (what the SendGrid and SES webhooks record), a repeat included.
    async with engine.begin() as conn:
        row = await repo.message_by_id(conn, uuid.UUID(message["id"]))
        now = datetime.now(UTC)
        assert await record(conn, row, "delivered", now, "sendgrid:evt-1")
        assert not await record(conn, row, "delivered", now, "sendgrid:evt-1")
        assert await record(conn, row, "bounced", now, "sendgrid:evt-2", suppress_reason="bounce")
        assert await record(conn, row, "complained", now, "ses:evt-3", suppress_reason="complaint")
    names = [name for name, _, _ in await announced(engine, ws, PROBE)]
    assert sorted(names) == sorted(
        [
            SystemEvent.EMAIL_SENT,
            SystemEvent.EMAIL_OPENED,
            SystemEvent.EMAIL_CLICKED,
            SystemEvent.EMAIL_UNSUBSCRIBED,
            SystemEvent.EMAIL_DELIVERED,
            SystemEvent.EMAIL_BOUNCED,
            SystemEvent.EMAIL_COMPLAINED,
        ]
    )
    # Each announced event is stored under its key, once.
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT count(*) FROM events WHERE workspace_id = :w AND name LIKE 'Email %'"), {"w": ws}
        )
    assert stored == len(names)


async def test_email_events_nobody_listens_for_are_not_announced(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    assert (await send(api, template["id"], "quiet@example.com"))["status"] == "sent"
    async with engine.connect() as conn:
        rows = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE workspace_id = :w"), {"w": workspace.workspace_id}
        )
    assert rows == 0
