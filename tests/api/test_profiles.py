"""Management API: profiles CRUD, pagination, filters, erasure, isolation."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from tests.conftest import new_workspace
from tests.support.db import count


async def test_create_get_patch_delete(api, tracking, workspace, engine):
    r = await api.post(
        "/api/v1/profiles",
        json={
            "email": "Ada@Example.com",
            "external_id": "ada",
            "traits": {"plan": "free", "address": {"city": "London", "zip": "N1"}},
        },
    )
    assert r.status_code == 201, r.text
    profile = r.json()
    pid = profile["id"]
    assert profile["traits"]["plan"] == "free"

    await tracking.post("/identify", json={"userId": "ada", "anonymousId": "laptop"})
    await tracking.post("/track", json={"userId": "ada", "event": "Viewed", "properties": {"n": 1}})

    detail = (await api.get(f"/api/v1/profiles/{pid}")).json()
    assert detail["email"] == "Ada@Example.com" and detail["external_id"] == "ada"
    assert detail["anonymous_ids"] == ["laptop"]
    assert [e["name"] for e in detail["events"]] == ["Viewed"]

    r = await api.patch(
        f"/api/v1/profiles/{pid}", json={"traits": {"plan": "pro", "address": {"zip": None}, "vip": True}}
    )
    assert r.status_code == 200
    assert r.json()["traits"] == {"plan": "pro", "address": {"city": "London"}, "vip": True}

    assert (await api.delete(f"/api/v1/profiles/{pid}")).status_code == 204
    assert (await api.get(f"/api/v1/profiles/{pid}")).status_code == 404
    ws = workspace.workspace_id
    assert await count(engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=ws) == 0
    assert await count(engine, "SELECT count(*) FROM profile_aliases WHERE workspace_id = :ws", ws=ws) == 0
    # The person coming back later is a new profile, not a resurrected one.
    await tracking.post("/track", json={"userId": "ada", "event": "Back"})
    listed = (await api.get("/api/v1/profiles", params={"external_id": "ada"})).json()["data"]
    assert len(listed) == 1 and listed[0]["id"] != pid


async def test_list_paginates_with_cursor(api, tracking):
    await tracking.post(
        "/track/batch", json={"batch": [{"userId": f"p{n:02}", "event": "E"} for n in range(25)]}
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        body = (await api.get("/api/v1/profiles", params=params)).json()
        seen += [p["external_id"] for p in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == [f"p{n:02}" for n in range(25)]
    assert len(set(seen)) == 25


async def test_list_filters(api, tracking):
    await tracking.post(
        "/identify",
        json={
            "userId": "f1",
            "email": "one@example.com",
            "traits": {"plan": "pro", "geo": {"country": "FR"}},
        },
    )
    await tracking.post(
        "/identify", json={"userId": "f2", "traits": {"plan": "free", "geo": {"country": "FR"}, "age": 30}}
    )
    by_email = (await api.get("/api/v1/profiles", params={"email": "ONE@example.com"})).json()["data"]
    assert [p["external_id"] for p in by_email] == ["f1"]
    by_ext = (await api.get("/api/v1/profiles", params={"external_id": "f2"})).json()["data"]
    assert [p["external_id"] for p in by_ext] == ["f2"]
    pro = (await api.get("/api/v1/profiles", params={"trait.plan": "pro"})).json()["data"]
    assert [p["external_id"] for p in pro] == ["f1"]
    fr = (await api.get("/api/v1/profiles", params={"trait.geo.country": "FR"})).json()["data"]
    assert sorted(p["external_id"] for p in fr) == ["f1", "f2"]
    aged = (await api.get("/api/v1/profiles", params={"trait.age": "30"})).json()["data"]
    assert [p["external_id"] for p in aged] == ["f2"]


async def test_bad_requests_are_4xx(api):
    assert (await api.get("/api/v1/profiles", params={"cursor": "!!"})).status_code == 400
    assert (await api.get("/api/v1/profiles", params={"limit": 0})).status_code == 422
    assert (await api.get("/api/v1/profiles", params={"trait.bad path": "x"})).status_code == 400
    assert (await api.get("/api/v1/profiles/not-a-uuid")).status_code == 422
    assert (await api.post("/api/v1/profiles", json={"traits": {}})).status_code == 422
    assert (await api.post("/api/v1/profiles", json={"email": "nope"})).status_code == 422
    assert (
        await api.post("/api/v1/profiles", content=b"{", headers={"Content-Type": "application/json"})
    ).status_code in (400, 422)
    assert (await api.post("/api/v1/profiles", json={"email": "a@b.co", "unknown": 1})).status_code == 422


async def test_duplicate_identity_is_409(api):
    assert (await api.post("/api/v1/profiles", json={"email": "dup@example.com"})).status_code == 201
    r = await api.post("/api/v1/profiles", json={"email": "DUP@example.com"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    other = (await api.post("/api/v1/profiles", json={"external_id": "other"})).json()
    r = await api.patch(f"/api/v1/profiles/{other['id']}", json={"email": "dup@example.com"})
    assert r.status_code == 409


async def test_workspaces_are_isolated(api, api_app, tracking, sessionmaker):
    mine = (await api.post("/api/v1/profiles", json={"email": "mine@example.com"})).json()
    other_keys = await new_workspace(sessionmaker)
    headers = {"Authorization": f"Bearer {other_keys.secret_key}"}
    async with httpx.AsyncClient(base_url=api_app.state.base_url, headers=headers) as other:
        assert (await other.get("/api/v1/profiles")).json()["data"] == []
        assert (await other.get(f"/api/v1/profiles/{mine['id']}")).status_code == 404
        assert (
            await other.patch(f"/api/v1/profiles/{mine['id']}", json={"traits": {"x": 1}})
        ).status_code == 404
        assert (await other.delete(f"/api/v1/profiles/{mine['id']}")).status_code == 404
        assert (await other.get("/api/v1/profiles", params={"email": "mine@example.com"})).json()[
            "data"
        ] == []
        # The same email in another workspace is a different person.
        assert (await other.post("/api/v1/profiles", json={"email": "mine@example.com"})).status_code == 201
    assert (await api.get(f"/api/v1/profiles/{mine['id']}")).json()["traits"] == {}


async def test_keys(api_app, workspace, engine):
    base = api_app.state.base_url
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/api/v1/profiles")).status_code == 401
        bad = await client.get("/api/v1/profiles", headers={"Authorization": "Bearer sk_wrong"})
        assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
        public = await client.get(
            "/api/v1/profiles", headers={"Authorization": f"Bearer {workspace.public_key}"}
        )
        assert public.status_code == 403
    # Only hashes are stored: neither key appears anywhere in api_keys.
    async with engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    text("SELECT * FROM api_keys WHERE workspace_id = :ws"), {"ws": workspace.workspace_id}
                )
            )
            .mappings()
            .all()
        )
    assert len(rows) == 2
    dump = repr([dict(r) for r in rows])
    assert workspace.public_key not in dump and workspace.secret_key not in dump
    assert {r["prefix"] for r in rows} == {workspace.public_key[:11], workspace.secret_key[:11]}


async def test_openapi_docs(api_app):
    async with httpx.AsyncClient(base_url=api_app.state.base_url) as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    assert {"/api/v1/profiles", "/api/v1/profiles/{profile_id}"} <= set(spec["paths"])
