"""Management API: topics CRUD by key, a profile's topic choices (with
their events), merges, erasure, bad input and isolation."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.campaigns.support import group_segment, inline_campaign
from tests.conftest import new_workspace
from tests.delivery.conftest import make_template
from tests.flows.support import active_flow
from tests.support.db import count


async def make_topic(api, key: str = "newsletter", name: str = "Newsletter", **extra) -> dict:
    r = await api.post("/api/v1/topics", json={"key": key, "name": name, **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def make_profile(api, email: str) -> str:
    r = await api.post("/api/v1/profiles", json={"email": email})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def topic_events(engine, workspace_id) -> list[tuple[str, dict]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT name, properties FROM events WHERE workspace_id = :w AND name LIKE 'Topic %' "
                "ORDER BY occurred_at, id"
            ),
            {"w": workspace_id},
        )
        return [(r[0], r[1]) for r in rows]


async def test_create_get_list_patch_delete(api):
    made = await make_topic(api, description="Once a month")
    assert made["key"] == "newsletter" and made["description"] == "Once a month"
    await make_topic(api, "product-updates", "Product updates")
    got = (await api.get("/api/v1/topics/newsletter")).json()
    assert got == made
    listed = (await api.get("/api/v1/topics")).json()
    assert [t["key"] for t in listed["data"]] == ["product-updates", "newsletter"]  # newest first
    assert listed["next_cursor"] is None

    r = await api.patch("/api/v1/topics/newsletter", json={"name": "Monthly news", "description": None})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Monthly news" and r.json()["description"] is None
    assert r.json()["key"] == "newsletter"
    assert (await api.get("/api/v1/topics/newsletter")).json()["name"] == "Monthly news"

    dup = await api.post("/api/v1/topics", json={"key": "newsletter", "name": "Again"})
    assert dup.status_code == 409

    assert (await api.delete("/api/v1/topics/newsletter")).status_code == 204
    assert (await api.get("/api/v1/topics/newsletter")).status_code == 404
    assert (await api.delete("/api/v1/topics/newsletter")).status_code == 404
    assert [t["key"] for t in (await api.get("/api/v1/topics")).json()["data"]] == ["product-updates"]


@pytest.mark.parametrize(
    "body",
    [
        {"key": "News Letter", "name": "x"},
        {"key": "Newsletter", "name": "x"},
        {"key": "", "name": "x"},
        {"key": "-lead", "name": "x"},
        {"key": "a" * 65, "name": "x"},
        {"key": "news\u0000", "name": "x"},
        {"key": "ünï", "name": "x"},
        {"key": "ok", "name": ""},
        {"key": "ok"},
        {"key": "ok", "name": "x", "extra": 1},
        {"key": 5, "name": "x"},
    ],
)
async def test_bad_topics_are_422(api, body):
    r = await api.post("/api/v1/topics", json=body)
    assert r.status_code == 422, r.text
    assert (await api.get("/api/v1/topics")).json()["data"] == []


async def test_bad_keys_in_paths_are_422(api):
    await make_topic(api)
    pid = await make_profile(api, "keys@example.com")
    for path in ("/api/v1/topics/Bad%20Key", "/api/v1/topics/UPPER", f"/api/v1/topics/{'a' * 65}"):
        assert (await api.get(path)).status_code == 422, path
        assert (await api.patch(path, json={"name": "x"})).status_code == 422, path
        assert (await api.delete(path)).status_code == 422, path
    r = await api.put(f"/api/v1/profiles/{pid}/topics/Bad%20Key", json={"subscribed": False})
    assert r.status_code == 422
    assert (await api.patch("/api/v1/topics/newsletter", json={"name": None})).status_code == 422
    assert (await api.patch("/api/v1/topics/newsletter", json={"key": "other"})).status_code == 422
    for body in ({"subscribed": "no"}, {"subscribed": 0}, {}, {"subscribed": None}):
        r = await api.put(f"/api/v1/profiles/{pid}/topics/newsletter", json=body)
        assert r.status_code == 422, body
    assert (await api.get(f"/api/v1/profiles/{pid}")).json()["topic_optouts"] == []


async def test_profile_choices_are_events(api, engine, workspace):
    await make_topic(api)
    await make_topic(api, "product-updates", "Product updates")
    pid = await make_profile(api, "chooser@example.com")
    assert (await api.get(f"/api/v1/profiles/{pid}")).json()["topic_optouts"] == []

    url = f"/api/v1/profiles/{pid}/topics/newsletter"
    r = await api.put(url, json={"subscribed": False})
    assert r.status_code == 200, r.text
    assert r.json() == {"profile_id": pid, "topic": "newsletter", "subscribed": False, "changed": True}
    # Saying it again changes nothing and records nothing.
    assert (await api.put(url, json={"subscribed": False})).json()["changed"] is False
    await api.put(f"/api/v1/profiles/{pid}/topics/product-updates", json={"subscribed": False})
    detail = (await api.get(f"/api/v1/profiles/{pid}")).json()
    assert detail["topic_optouts"] == ["newsletter", "product-updates"]

    assert (await api.put(url, json={"subscribed": True})).json()["changed"] is True
    assert (await api.get(f"/api/v1/profiles/{pid}")).json()["topic_optouts"] == ["product-updates"]
    assert await topic_events(engine, workspace.workspace_id) == [
        ("Topic Unsubscribed", {"topic": "newsletter", "method": "api"}),
        ("Topic Unsubscribed", {"topic": "product-updates", "method": "api"}),
        ("Topic Resubscribed", {"topic": "newsletter", "method": "api"}),
    ]
    # Unknown topic or profile: 404, nothing stored.
    assert (
        await api.put(f"/api/v1/profiles/{pid}/topics/nope", json={"subscribed": False})
    ).status_code == 404
    missing = f"/api/v1/profiles/{uuid.uuid4()}/topics/newsletter"
    assert (await api.put(missing, json={"subscribed": False})).status_code == 404
    assert len(await topic_events(engine, workspace.workspace_id)) == 3


async def test_deleting_a_topic_keeps_opt_outs_and_erasure_removes_them(api, engine, workspace):
    await make_topic(api)
    pid = await make_profile(api, "keeper@example.com")
    await api.put(f"/api/v1/profiles/{pid}/topics/newsletter", json={"subscribed": False})
    assert (await api.delete("/api/v1/topics/newsletter")).status_code == 204
    # The person's choice stays (a send still tagged with the key honours it),
    # and a topic made again with the key starts from it.
    assert (await api.get(f"/api/v1/profiles/{pid}")).json()["topic_optouts"] == ["newsletter"]
    await make_topic(api)
    r = await api.put(f"/api/v1/profiles/{pid}/topics/newsletter", json={"subscribed": False})
    assert r.json()["changed"] is False
    assert (await api.delete(f"/api/v1/profiles/{pid}")).status_code == 204
    sql = "SELECT count(*) FROM topic_optouts WHERE workspace_id = :ws"
    assert await count(engine, sql, ws=workspace.workspace_id) == 0


async def test_opt_outs_follow_a_merged_profile(api, tracking, engine, workspace):
    await make_topic(api)
    await make_topic(api, "product-updates", "Product updates")
    assert (
        await tracking.post("/track", json={"anonymousId": "visitor-7", "event": "Viewed"})
    ).status_code == 200
    async with engine.connect() as conn:
        anonymous = await conn.scalar(
            text(
                "SELECT profile_id FROM profile_aliases "
                "WHERE workspace_id = :w AND anonymous_id = 'visitor-7'"
            ),
            {"w": workspace.workspace_id},
        )
    await api.put(f"/api/v1/profiles/{anonymous}/topics/newsletter", json={"subscribed": False})
    r = await api.post("/api/v1/profiles", json={"external_id": "known-7", "email": "known7@example.com"})
    known = r.json()["id"]
    await api.put(f"/api/v1/profiles/{known}/topics/product-updates", json={"subscribed": False})
    r = await tracking.post("/identify", json={"userId": "known-7", "anonymousId": "visitor-7"})
    assert r.status_code == 200
    assert (await api.get(f"/api/v1/profiles/{anonymous}")).status_code == 404
    assert (await api.get(f"/api/v1/profiles/{known}")).json()["topic_optouts"] == [
        "newsletter",
        "product-updates",
    ]


async def test_another_workspace_sees_nothing(api, api_app, sessionmaker, engine, workspace):
    await make_topic(api)
    pid = await make_profile(api, "mine@example.com")
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(
        base_url=api_app.state.base_url, headers={"Authorization": f"Bearer {other.secret_key}"}
    ) as client:
        assert (await client.get("/api/v1/topics")).json()["data"] == []
        for method, path, body in [
            ("GET", "/api/v1/topics/newsletter", None),
            ("PATCH", "/api/v1/topics/newsletter", {"name": "theirs"}),
            ("DELETE", "/api/v1/topics/newsletter", None),
            ("PUT", f"/api/v1/profiles/{pid}/topics/newsletter", {"subscribed": False}),
        ]:
            r = await client.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        # Its own topic of the same key is its own; our profile is still out of reach.
        r = await client.post("/api/v1/topics", json={"key": "newsletter", "name": "Theirs"})
        assert r.status_code == 201
        r = await client.put(f"/api/v1/profiles/{pid}/topics/newsletter", json={"subscribed": False})
        assert r.status_code == 404
    assert (await api.get("/api/v1/topics/newsletter")).json()["name"] == "Newsletter"
    assert (await api.get(f"/api/v1/profiles/{pid}")).json()["topic_optouts"] == []
    assert await topic_events(engine, workspace.workspace_id) == []


async def test_a_topic_in_use_cannot_be_deleted(api, sessionmaker, workspace):
    await make_topic(api, "news", "News")
    await make_topic(api, "spare", "Spare")
    campaign = await inline_campaign(api, [await group_segment(api, "readers")], name="Weekly", topic="news")
    template = await make_template(api)
    flow_id = await active_flow(
        sessionmaker,
        workspace.workspace_id,
        {
            "trigger": {"type": "event", "name": "Signed Up"},
            "start": "mail",
            "nodes": [{"id": "mail", "type": "send_email", "template_id": template["id"], "topic": "news"}],
        },
        name="Onboarding",
    )
    r = await api.delete("/api/v1/topics/news")
    assert r.status_code == 409
    assert "campaign 'Weekly'" in r.json()["detail"] and "flow 'Onboarding'" in r.json()["detail"]
    assert (await api.get("/api/v1/topics/news")).status_code == 200
    # A topic nothing uses goes at once.
    assert (await api.delete("/api/v1/topics/spare")).status_code == 204

    # Once the campaign moved to another topic and the flow is archived, it can go.
    assert (await make_topic(api, "other", "Other"))["key"] == "other"
    r = await api.patch(f"/api/v1/campaigns/{campaign['id']}", json={"topic": "other"})
    assert r.status_code == 200, r.text
    r = await api.delete("/api/v1/topics/news")
    assert r.status_code == 409 and "Weekly" not in r.text and "Onboarding" in r.text
    archived = await api.post(f"/api/v1/flows/{flow_id}/archive")
    assert archived.status_code in (200, 202), archived.text
    assert (await api.delete("/api/v1/topics/news")).status_code == 204
