"""A flow's send_email node with a subscription topic: the topic must be
the workspace's, a person who left it is not sent the email, and the
message carries the topic (its one-click unsubscribe leaves only that topic)."""

from __future__ import annotations

from sqlalchemy import text

from tests.delivery.conftest import add_sendgrid, make_template
from tests.flows.support import active_flow, enrollments, wait_for


def _graph(template_id: str, topic: str) -> dict:
    return {
        "trigger": {"type": "event", "name": "Signed Up"},
        "start": "mail",
        "nodes": [{"id": "mail", "type": "send_email", "template_id": template_id, "topic": topic}],
    }


async def test_topic_must_exist_and_be_a_key(api):
    template = await make_template(api)
    r = await api.post(
        "/api/v1/flows", json={"name": "News", "definition": _graph(template["id"], "newsletter")}
    )
    assert r.status_code == 422
    assert any(
        e["loc"] == "body.definition.nodes.mail" and "no topic 'newsletter'" in e["msg"]
        for e in r.json()["detail"]
    ), r.text
    r = await api.post(
        "/api/v1/flows", json={"name": "News", "definition": _graph(template["id"], "Bad Key")}
    )
    assert r.status_code == 422
    assert (
        await api.post("/api/v1/topics", json={"key": "newsletter", "name": "Newsletter"})
    ).status_code == 201
    r = await api.post(
        "/api/v1/flows", json={"name": "News", "definition": _graph(template["id"], "newsletter")}
    )
    assert r.status_code == 201, r.text
    assert r.json()["definition"]["nodes"][0]["topic"] == "newsletter"


async def test_a_person_who_left_the_topic_gets_no_flow_email(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    assert (
        await api.post("/api/v1/topics", json={"key": "newsletter", "name": "Newsletter"})
    ).status_code == 201
    for user in ("stays", "leaves"):
        body = {"userId": user, "traits": {"email": f"{user}@example.com"}}
        assert (await tracking.post("/identify", json=body)).status_code == 200
    leaver = (await api.get("/api/v1/profiles", params={"external_id": "leaves"})).json()["data"][0]["id"]
    r = await api.put(f"/api/v1/profiles/{leaver}/topics/newsletter", json={"subscribed": False})
    assert r.json()["changed"] is True
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, _graph(template["id"], "newsletter"))
    for user in ("stays", "leaves"):
        assert (await tracking.post("/track", json={"userId": user, "event": "Signed Up"})).status_code == 200

    async def finished():
        rows = await enrollments(engine, flow_id)
        return len(rows) == 2 and all(r["status"] != "running" for r in rows)

    await wait_for(finished)
    assert [p["personalizations"][0]["to"][0]["email"] for p in sendgrid.received] == ["stays@example.com"]
    assert sendgrid.received[0]["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email::text, status, topic, error FROM messages WHERE flow_id = :f ORDER BY email"),
            {"f": flow_id},
        )
        messages = [tuple(r) for r in rows]
    assert messages[0][:3] == ("leaves@example.com", "suppressed", "newsletter")
    assert "newsletter" in messages[0][3]
    assert messages[1][:3] == ("stays@example.com", "sent", "newsletter")


async def test_leaving_a_topic_triggers_a_flow(api, tracking, worker, engine, sessionmaker, workspace):
    for key in ("newsletter", "offers"):
        assert (await api.post("/api/v1/topics", json={"key": key, "name": key})).status_code == 201
    definition = {
        "trigger": {
            "type": "event",
            "name": "Topic Unsubscribed",
            "where": [{"path": "topic", "op": "eq", "value": "newsletter"}],
        },
        "start": "hold",
        "nodes": [{"id": "hold", "type": "wait", "seconds": 3600}],
    }
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
    pid = (await api.post("/api/v1/profiles", json={"email": "winback@example.com"})).json()["id"]
    await api.put(f"/api/v1/profiles/{pid}/topics/offers", json={"subscribed": False})
    await api.put(f"/api/v1/profiles/{pid}/topics/newsletter", json={"subscribed": False})
    [enrollment] = await wait_for(lambda: enrollments(engine, flow_id))
    assert str(enrollment["profile_id"]) == pid
