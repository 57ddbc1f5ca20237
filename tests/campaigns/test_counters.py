"""A campaign's counters (kept by triggers as its rows change) equal a
recount from its snapshot and messages after a send, repeated opens and
clicks through the tracking links, and delivery, bounce and complaint
webhooks delivered twice; a repeat counts nothing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import text

from delivery import engagement
from delivery import repository as delivery_repo
from tests.campaigns.support import add_people, assert_counted, finished, group_segment, inline_campaign
from tests.delivery.conftest import add_sendgrid


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def _webhook(engine, message_id: str, kind: str, source: str) -> bool:
    """What a provider webhook records for one event (delivery/webhooks.py)."""
    async with engine.begin() as conn:
        message = await delivery_repo.message_by_id(conn, uuid.UUID(message_id))
        reason = {"bounced": "hard_bounce", "complained": "complaint"}.get(kind)
        return await engagement.record(conn, message, kind, datetime.now(UTC), source, suppress_reason=reason)


async def test_counters_equal_a_recount_after_repeated_engagement(
    api, tracking_app, worker, sendgrid, engine, workspace
):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 6, "k")
    campaign = await inline_campaign(api, [await group_segment(api, "k")])
    cid = campaign["id"]
    assert (await assert_counted(engine, cid))["recipients"] == 0
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    assert (await finished(api, cid, timeout=60))["sent"] == 6
    totals = await assert_counted(engine, cid)
    assert totals["sent"] == 6 and totals["pending"] == 0 and totals["unique_opens"] == 0

    html = {m["to"]: m["html"] for m in sendgrid.delivered()}
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        for address, times in (("k-0@example.com", 3), ("k-1@example.com", 1)):
            pixel = re.search(r'src="([^"]+/o/[^"]+\.gif)"', html[address]).group(1)
            click = re.search(r"href=['\"]([^'\"]+/c/[^'\"]+)['\"]", html[address]).group(1)
            for _ in range(times):
                assert (await client.get(_path(pixel))).status_code == 200
                assert (await client.get(_path(click))).status_code == 302
    totals = await assert_counted(engine, cid)
    assert totals["unique_opens"] == 2 and totals["unique_clicks"] == 2

    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email, id FROM messages WHERE recipient_campaign_id = :c"), {"c": cid}
        )
        ids = {email: str(message_id) for email, message_id in rows}
    events = [
        ("k-2@example.com", "delivered", "ev-1"),
        ("k-3@example.com", "delivered", "ev-2"),
        ("k-3@example.com", "bounced", "ev-3"),
        ("k-4@example.com", "complained", "ev-4"),
        ("k-5@example.com", "bounced", "ev-5"),
        ("k-5@example.com", "delivered", "ev-6"),  # after its bounce: stamped, the status stays
        ("k-2@example.com", "opened", "ev-7"),  # a provider-tracked open
        ("k-0@example.com", "opened", "ev-8"),  # opened before: not unique
    ]
    for address, kind, source in events:
        assert await _webhook(engine, ids[address], kind, source)
    for address, kind, source in events:  # every webhook delivered again
        assert not await _webhook(engine, ids[address], kind, source)
    totals = await assert_counted(engine, cid)
    assert (totals["delivered"], totals["bounced"], totals["complained"]) == (3, 2, 1)
    assert totals["unique_opens"] == 3 and totals["sent"] == 6

    stats = (await api.get(f"/api/v1/campaigns/{cid}/stats")).json()
    assert stats["providers"] == [
        {"provider": "sendgrid", "sent": 6, "delivered": 3, "bounced": 2, "opened": 3, "clicked": 2}
    ]
    assert stats["rates"]["bounce"] == round(2 / 6, 4)
