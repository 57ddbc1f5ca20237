"""Tracking API: every bad input gets a clear 4xx and stores nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.support.db import count


async def _stored(engine, workspace) -> tuple[int, int]:
    ws = workspace.workspace_id
    events = await count(engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=ws)
    profiles = await count(engine, "SELECT count(*) FROM profiles WHERE workspace_id = :ws", ws=ws)
    return events, profiles


async def test_invalid_json_is_400(tracking, workspace, engine):
    r = await tracking.post(
        "/track", content=b'{"userId": "u1", "event": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request" and "invalid JSON" in r.json()["detail"]
    assert await _stored(engine, workspace) == (0, 0)


async def test_empty_body_is_400(tracking, workspace, engine):
    r = await tracking.post("/track", content=b"")
    assert r.status_code == 400


async def test_missing_identity_is_422(tracking, workspace, engine):
    r = await tracking.post("/track", json={"event": "Orphan", "properties": {}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"].startswith("missing identity")
    assert await _stored(engine, workspace) == (0, 0)


async def test_missing_event_name_is_422(tracking, workspace, engine):
    r = await tracking.post("/track", json={"userId": "u1"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.event"


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"userId": "u1", "event": "E", "properties": ["not", "an", "object"]}, "body.properties"),
        ({"userId": "u1", "event": "E", "timestamp": "last tuesday"}, "body.timestamp"),
        ({"userId": {"nested": True}, "event": "E"}, "body.userId"),
        ({"userId": "u1", "event": 12}, "body.event"),
        ({"userId": "u1", "event": "E", "context": "web"}, "body.context"),
        ({"email": "not-an-email", "event": "E"}, "body.email"),
        ({"userId": "x" * 300, "event": "E"}, "body.userId"),
    ],
)
async def test_wrong_types_are_422_naming_the_field(tracking, workspace, engine, body, loc):
    r = await tracking.post("/track", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert any(d["loc"] == loc for d in r.json()["detail"]), r.json()
    assert await _stored(engine, workspace) == (0, 0)


async def test_explicit_nulls_are_treated_as_absent(tracking, workspace, engine):
    body = {
        "userId": None,
        "anonymousId": "a",
        "email": None,
        "messageId": None,
        "timestamp": None,
        "context": None,
        "event": "E",
    }
    r = await tracking.post("/track", json=body)
    assert r.status_code == 200, r.text
    assert await _stored(engine, workspace) == (1, 1)


async def test_nul_characters_are_refused(tracking, workspace, engine):
    r = await tracking.post("/track", json={"userId": "u1", "event": "E", "properties": {"x": "a\u0000b"}})
    assert r.status_code == 422
    assert await _stored(engine, workspace) == (0, 0)


async def test_event_over_32kb_is_413(tracking, workspace, engine):
    r = await tracking.post(
        "/track", json={"userId": "u1", "event": "Big", "properties": {"blob": "x" * 33_000}}
    )
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert await _stored(engine, workspace) == (0, 0)


async def test_batch_with_one_event_over_32kb_is_413_and_stores_nothing(tracking, workspace, engine):
    batch = [{"userId": "u1", "event": "Small"}] * 5 + [
        {"userId": "u1", "event": "Big", "properties": {"b": "x" * 33_000}}
    ]
    r = await tracking.post("/track/batch", json={"batch": batch})
    assert r.status_code == 413 and "body.batch.5" in r.json()["detail"]
    assert await _stored(engine, workspace) == (0, 0)


async def test_batch_over_500kb_is_413(tracking, workspace, engine):
    batch = [{"userId": f"u{n}", "event": "E", "properties": {"pad": "y" * 20_000}} for n in range(30)]
    r = await tracking.post("/track/batch", json={"batch": batch})
    assert r.status_code == 413
    assert await _stored(engine, workspace) == (0, 0)


async def test_batch_over_1000_events_is_413(tracking, workspace, engine):
    r = await tracking.post("/track/batch", json={"batch": [{"userId": "u", "event": "E"}] * 1001})
    assert r.status_code == 413 and "1001" in r.json()["detail"]
    assert await _stored(engine, workspace) == (0, 0)


async def test_batch_with_one_invalid_call_stores_nothing(tracking, workspace, engine):
    batch = [
        {"userId": "u1", "event": "Fine"},
        {"event": "No identity"},
        {"type": "heartbeat", "userId": "u1"},
    ]
    r = await tracking.post("/track/batch", json={"batch": batch})
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert locs == ["body.batch.1", "body.batch.2.type"]
    assert await _stored(engine, workspace) == (0, 0)


async def test_batch_must_be_a_list(tracking):
    assert (await tracking.post("/track/batch", json={"batch": {"userId": "u"}})).status_code == 422
    assert (await tracking.post("/track/batch", json={"batch": []})).status_code == 422


async def test_unknown_key_is_401(tracking_app, workspace, engine):
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        r = await client.post(
            "/track", json={"userId": "u", "event": "E"}, headers={"Authorization": "Bearer pk_unknown"}
        )
        missing = await client.post("/track", json={"userId": "u", "event": "E"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert missing.status_code == 401


async def test_secret_key_is_403_on_tracking(tracking_app, workspace, engine):
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        r = await client.post(
            "/track",
            json={"userId": "u", "event": "E"},
            headers={"Authorization": f"Bearer {workspace.secret_key}"},
        )
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert await _stored(engine, workspace) == (0, 0)


@pytest.mark.parametrize("path", ["/track", "/identify", "/page", "/alias", "/track/batch"])
async def test_every_endpoint_requires_a_key(tracking_app, path):
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        r = await client.post(path, json={"userId": "u", "event": "E"})
    assert r.status_code == 401


async def test_alias_needs_both_ids(tracking):
    r = await tracking.post("/alias", json={"userId": "u"})
    assert r.status_code == 422


async def test_tracking_openapi_documents_every_endpoint(tracking_app):
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        spec = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
    for path in ("/track", "/identify", "/page", "/alias", "/track/batch"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body, path


async def test_fastapi_routes_behave_like_the_fast_path(tracking_app, workspace, engine):
    # The documented FastAPI routes (used when the app runs without the fast path).
    inner = tracking_app.app
    transport = httpx.ASGITransport(app=inner)
    headers = {"Authorization": f"Bearer {workspace.public_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://inner", headers=headers) as client:
        ok = await client.post("/track", json={"userId": "u1", "event": "Via FastAPI"})
        bad = await client.post("/track", json={"event": "no identity"})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
