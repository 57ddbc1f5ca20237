"""Subscription topics on the send path and the preference page: a person
who left a message's topic is not sent it; the page lists the workspace's
topics with the person's choices and saves them; the RFC 8058 one-click
POST leaves the message's topic (or everything, for a message without one)."""

from __future__ import annotations

import re
import uuid

import httpx
from sqlalchemy import select, text

from db.tables import profiles
from delivery.links import KIND_OPEN, LinkSigner
from tests.conftest import new_workspace
from tests.delivery.conftest import add_sendgrid, make_template, send
from topics.repository import receives_topic

ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def _topic(api, key: str, name: str, description: str | None = None) -> None:
    r = await api.post("/api/v1/topics", json={"key": key, "name": name, "description": description})
    assert r.status_code == 201, r.text


async def _events(engine, workspace, prefix: str) -> list[tuple[str, dict]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT name, properties FROM events WHERE workspace_id = :w AND name LIKE :p "
                "ORDER BY occurred_at, id"
            ),
            {"w": workspace.workspace_id, "p": prefix + "%"},
        )
        return [(r[0], r[1]) for r in rows]


async def _suppressed(api) -> list[str]:
    return [s["email"] for s in (await api.get("/api/v1/suppressions")).json()["data"]]


def _checked(page: str) -> dict[str, bool]:
    """Topic key → whether its box is ticked."""
    boxes = re.findall(r"<input type='checkbox' name='topic' value='([^']*)'( checked)?>", page)
    return {key: bool(ticked) for key, ticked in boxes}


async def _setup(api, sendgrid) -> dict:
    await add_sendgrid(api, sendgrid)
    await _topic(api, "newsletter", "Newsletter", "Once a month")
    await _topic(api, "product-updates", "Product updates")
    return await make_template(api)


async def test_a_person_who_left_a_topic_is_not_sent_it(api, worker, sendgrid, engine, workspace):
    template = await _setup(api, sendgrid)
    first = await send(api, template["id"], "reader@example.com", topic="newsletter")
    assert first["status"] == "sent" and first["topic"] == "newsletter"
    assert sendgrid.received[-1]["headers"]["List-Unsubscribe"].startswith("<")
    [(_, sent)] = await _events(engine, workspace, "Email Sent")
    assert sent["topic"] == "newsletter"

    r = await api.put(f"/api/v1/profiles/{first['profile_id']}/topics/newsletter", json={"subscribed": False})
    assert r.json()["changed"] is True
    held = await send(api, template["id"], "reader@example.com", topic="newsletter")
    assert held["status"] == "suppressed" and "newsletter" in held["error"]
    assert len(sendgrid.received) == 1
    # Other topics and messages without a topic still go out.
    assert (await send(api, template["id"], "reader@example.com", topic="product-updates"))[
        "status"
    ] == "sent"
    assert (await send(api, template["id"], "reader@example.com"))["status"] == "sent"
    assert len(sendgrid.received) == 3
    # A topic the workspace does not have is refused before anything is stored.
    r = await api.post(
        "/api/v1/messages", json={"template_id": template["id"], "email": "x@example.com", "topic": "nope"}
    )
    assert r.status_code == 422 and "topic" in r.text
    r = await api.post(
        "/api/v1/messages", json={"template_id": template["id"], "email": "x@example.com", "topic": "Bad Key"}
    )
    assert r.status_code == 422


async def test_preference_page_lists_topics_and_saves_choices(
    api, tracking_app, worker, sendgrid, engine, workspace
):
    template = await _setup(api, sendgrid)
    await _topic(api, "offers", "<script>alert(1)</script> & offers", '"quoted" <b>bold</b>')
    message = await send(api, template["id"], "chooser@example.com", topic="newsletter")
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    profile_url = f"/api/v1/profiles/{message['profile_id']}"
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        page = await client.get(url)
        assert page.status_code == 200 and page.headers["cache-control"].startswith("no-store")
        assert "chooser@example.com" in page.text and "Newsletter <em>(this email)</em>" in page.text
        assert _checked(page.text) == {"newsletter": True, "offers": True, "product-updates": True}
        assert (
            "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; offers" in page.text
        )
        assert "&quot;quoted&quot; &lt;b&gt;bold&lt;/b&gt;" in page.text
        assert "Unsubscribe from all emails" in page.text and "<script" not in page.text.lower()
        # A GET changes nothing.
        assert await _events(engine, workspace, "Topic ") == []
        assert (await api.get(profile_url)).json()["topic_optouts"] == []

        # Untick the newsletter (a key that is not the workspace's is ignored).
        saved = await client.post(
            url, data={"action": "save", "topic": ["product-updates", "offers", "evil"]}
        )
        assert saved.status_code == 200 and "Your preferences are saved." in saved.text
        assert _checked(saved.text) == {"newsletter": False, "offers": True, "product-updates": True}
        assert (await api.get(profile_url)).json()["topic_optouts"] == ["newsletter"]
        assert _checked((await client.get(url)).text)["newsletter"] is False
        # Saving the same choices again records nothing more.
        await client.post(url, data={"action": "save", "topic": ["product-updates", "offers"]})
        # Untick everything but the newsletter, which comes back.
        await client.post(url, data={"action": "save", "topic": "newsletter"})
        assert (await api.get(profile_url)).json()["topic_optouts"] == ["offers", "product-updates"]

    props = {"method": "page", "message_id": message["id"]}
    recorded = await _events(engine, workspace, "Topic ")
    assert recorded[0] == ("Topic Unsubscribed", {"topic": "newsletter", **props})
    assert sorted(recorded[1:], key=str) == sorted(
        [
            ("Topic Resubscribed", {"topic": "newsletter", **props}),
            ("Topic Unsubscribed", {"topic": "offers", **props}),
            ("Topic Unsubscribed", {"topic": "product-updates", **props}),
        ],
        key=str,
    )
    # Leaving the message's own topic counts as its unsubscribe (campaign
    # and message stats); the address itself is not suppressed.
    [(_, unsubscribed)] = await _events(engine, workspace, "Email Unsubscribed")
    assert unsubscribed["scope"] == "topic" and unsubscribed["topic"] == "newsletter"
    assert await _suppressed(api) == []


async def test_unsubscribe_from_all_on_the_page(api, tracking_app, worker, sendgrid, engine, workspace):
    template = await _setup(api, sendgrid)
    await send(api, template["id"], "done@example.com", topic="newsletter")
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        done = await client.post(url, data={"action": "unsubscribe_all"})
        assert done.status_code == 200 and "will get no more emails" in done.text
        page = await client.get(url)
        assert "unsubscribed from all emails" in page.text
    assert await _suppressed(api) == ["done@example.com"]
    [(_, unsubscribed)] = await _events(engine, workspace, "Email Unsubscribed")
    assert unsubscribed["scope"] == "all" and unsubscribed["method"] == "page"
    assert (await send(api, template["id"], "done@example.com"))["status"] == "suppressed"


async def test_one_click_leaves_the_message_topic_only(
    api, tracking_app, worker, sendgrid, engine, workspace
):
    template = await _setup(api, sendgrid)
    message = await send(api, template["id"], "clicker@example.com", topic="newsletter")
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        done = await client.post(url, **ONE_CLICK)
        assert done.status_code == 200 and "no more <b>Newsletter</b> emails" in done.text
        again = await client.post(url, **ONE_CLICK)
        assert again.status_code == 200
    profile = (await api.get(f"/api/v1/profiles/{message['profile_id']}")).json()
    assert profile["topic_optouts"] == ["newsletter"]
    assert await _suppressed(api) == []
    assert [n for n, _ in await _events(engine, workspace, "Topic ")] == ["Topic Unsubscribed"]
    [(_, unsubscribed)] = await _events(engine, workspace, "Email Unsubscribed")
    assert unsubscribed == {
        "message_id": message["id"],
        "campaign_id": None,
        "template_id": template["id"],
        "topic": "newsletter",
        "method": "one-click",
        "scope": "topic",
    }
    assert (await send(api, template["id"], "clicker@example.com", topic="newsletter"))[
        "status"
    ] == "suppressed"
    # A message without a topic: one-click unsubscribes from everything, as before topics.
    plain = await send(api, template["id"], "clicker@example.com", topic="product-updates")
    assert plain["status"] == "sent"
    plain = await send(api, template["id"], "clicker@example.com")
    assert plain["status"] == "sent"
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        assert (await client.post(url, **ONE_CLICK)).status_code == 200
    assert await _suppressed(api) == ["clicker@example.com"]
    assert (await send(api, template["id"], "clicker@example.com", topic="product-updates"))["status"] == (
        "suppressed"
    )


async def test_bad_tokens_and_other_workspaces(
    api, tracking_app, worker, sendgrid, settings, sessionmaker, workspace
):
    template = await _setup(api, sendgrid)
    message = await send(api, template["id"], "mine@example.com", topic="newsletter")
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {other.secret_key}"}
    ) as theirs:
        r = await theirs.post("/api/v1/topics", json={"key": "their-topic", "name": "Their secret topic"})
        assert r.status_code == 201
    signer = LinkSigner(settings.secret_key)
    open_token = signer.token(uuid.UUID(message["id"]), KIND_OPEN)
    unknown = signer.token(uuid.uuid4(), 3)
    token = url.split("/u/")[1]
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        page = await client.get(url)
        # Only the message's own workspace's topics are shown.
        assert set(_checked(page.text)) == {"newsletter", "product-updates"}
        assert "Their secret topic" not in page.text
        for bad in ("forged", open_token, unknown, tampered, "a" * 300):
            assert (await client.get(f"/u/{bad}")).status_code == 404, bad
            assert (await client.post(f"/u/{bad}", **ONE_CLICK)).status_code == 404, bad
            assert (await client.post(f"/u/{bad}", data={"action": "save"})).status_code == 404, bad
        assert (await client.get("/u/%00")).status_code == 400  # refused before routing
        # Hostile form bodies change nothing and never fail.
        r = await client.post(url, content=b"action=save&" + b"&".join(b"topic=x" for _ in range(600)))
        assert r.status_code == 400
        r = await client.post(url, content=b"action=save&topic=\xff\xfe%00&topic=%ud800")
        assert r.status_code == 200
    assert (await api.get(f"/api/v1/profiles/{message['profile_id']}")).json()["topic_optouts"] == [
        "newsletter",
        "product-updates",
    ]
    assert await _suppressed(api) == []


async def test_audience_filter_for_snapshots(api, engine, workspace):
    await _topic(api, "newsletter", "Newsletter")
    ids = {}
    for name in ("stay", "leave"):
        ids[name] = (await api.post("/api/v1/profiles", json={"email": f"{name}@example.com"})).json()["id"]
    await api.put(f"/api/v1/profiles/{ids['leave']}/topics/newsletter", json={"subscribed": False})
    ws = workspace.workspace_id

    async def audience(topic):
        stmt = select(profiles.c.id).where(
            profiles.c.workspace_id == ws, receives_topic(ws, profiles.c.id, topic)
        )
        async with engine.connect() as conn:
            return {str(r[0]) for r in await conn.execute(stmt)}

    assert await audience("newsletter") == {ids["stay"]}
    assert await audience("product-updates") == {ids["stay"], ids["leave"]}
    assert await audience(None) == {ids["stay"], ids["leave"]}


async def test_an_erased_person_can_still_unsubscribe(api, tracking_app, worker, sendgrid, engine, workspace):
    template = await _setup(api, sendgrid)
    message = await send(api, template["id"], "erased@example.com", topic="newsletter")
    url = _path(sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>"))
    assert (await api.delete(f"/api/v1/profiles/{message['profile_id']}")).status_code == 204
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        page = await client.get(url)
        # No choices can be stored for nobody: only "unsubscribe from all" is offered.
        assert page.status_code == 200 and _checked(page.text) == {}
        assert "Unsubscribe from all emails" in page.text
        saved = await client.post(url, data={"action": "save", "topic": "newsletter"})
        assert saved.status_code == 200
        # One-click on a topic message whose person is gone leaves everything.
        done = await client.post(url, **ONE_CLICK)
        assert done.status_code == 200 and "will get no more emails" in done.text
    assert await _suppressed(api) == ["erased@example.com"]
    sql = "SELECT count(*) FROM topic_optouts WHERE workspace_id = :w"
    async with engine.connect() as conn:
        assert await conn.scalar(text(sql), {"w": workspace.workspace_id}) == 0
