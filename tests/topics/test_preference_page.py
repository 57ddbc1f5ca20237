"""The preference page's "unsubscribe from all" and "resubscribe to all":
leaving everything suppresses the address; coming back joins every topic
again and lifts that suppression, but never a bounce or complaint."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text

from tests.delivery.conftest import add_sendgrid, make_template, send
from tests.topics.test_api import make_topic

RESUBSCRIBE = "Resubscribe to all emails"
UNSUBSCRIBE = "Unsubscribe from all emails"


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def _suppressed(api) -> dict[str, str]:
    return {s["email"]: s["reason"] for s in (await api.get("/api/v1/suppressions")).json()["data"]}


async def test_unsubscribe_from_all_then_resubscribe_to_all(
    api, tracking_app, worker, sendgrid, engine, workspace
):
    await add_sendgrid(api, sendgrid)
    await make_topic(api, "newsletter", "Newsletter")
    await make_topic(api, "offers", "Offers")
    template = await make_template(api)
    message = await send(api, template["id"], "back@example.com", topic="newsletter")
    assert message["status"] == "sent"
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    profile_url = f"/api/v1/profiles/{message['profile_id']}"
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        page = (await client.get(url)).text
        # Nothing left yet: nothing to come back to.
        assert UNSUBSCRIBE in page and RESUBSCRIBE not in page
        saved = await client.post(url, data={"action": "save", "topic": "offers"})
        assert saved.status_code == 200 and RESUBSCRIBE in saved.text
        assert (await api.get(profile_url)).json()["topic_optouts"] == ["newsletter"]

        done = await client.post(url, data={"action": "unsubscribe_all"})
        assert done.status_code == 200 and "will get no more emails" in done.text
        page = (await client.get(url)).text
        assert "unsubscribed from all emails" in page
        assert RESUBSCRIBE in page and UNSUBSCRIBE not in page
        assert await _suppressed(api) == {"back@example.com": "unsubscribed"}
        assert (await send(api, template["id"], "back@example.com"))["status"] == "suppressed"

        back = await client.post(url, data={"action": "resubscribe_all"})
        assert back.status_code == 200 and "subscribed to all emails again" in back.text
        assert UNSUBSCRIBE in back.text and RESUBSCRIBE not in back.text
    assert await _suppressed(api) == {}
    assert (await api.get(profile_url)).json()["topic_optouts"] == []
    async with engine.connect() as conn:
        last = (
            await conn.execute(
                text(
                    "SELECT name, properties->>'topic', properties->>'method' FROM events "
                    "WHERE workspace_id = :w AND name LIKE 'Topic %' "
                    "ORDER BY occurred_at DESC, id DESC LIMIT 1"
                ),
                {"w": workspace.workspace_id},
            )
        ).one()
    assert tuple(last) == ("Topic Resubscribed", "newsletter", "page")
    again = await send(api, template["id"], "back@example.com", topic="newsletter")
    assert again["status"] == "sent"


async def test_resubscribing_never_lifts_a_bounce(api, tracking_app, worker, sendgrid, workspace):
    await add_sendgrid(api, sendgrid)
    await make_topic(api, "newsletter", "Newsletter")
    template = await make_template(api)
    await send(api, template["id"], "bounced@example.com", topic="newsletter")
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    r = await api.post("/api/v1/suppressions", json={"email": "bounced@example.com", "reason": "bounce"})
    assert r.status_code in (200, 201), r.text
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        page = (await client.get(url)).text
        assert "bounced" in page and RESUBSCRIBE not in page and UNSUBSCRIBE not in page
        forced = await client.post(url, data={"action": "resubscribe_all"})
        assert forced.status_code == 200 and "subscribed to every topic again" in forced.text
    assert await _suppressed(api) == {"bounced@example.com": "bounce"}
