"""Segments API: definitions validated with paths, CRUD, estimate,
members, recalculation through Temporal, isolation."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from tests.conftest import new_workspace

PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
BUYER = {
    "type": "event",
    "name": "Order Completed",
    "count": {"op": ">=", "value": 2},
    "within": {"last": 30},
}


async def _seed(tracking) -> None:
    batch = [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "age": 41}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "pro", "age": 25}},
        {"type": "identify", "userId": "cat", "traits": {"plan": "free"}},
        {"userId": "ann", "event": "Order Completed", "properties": {"revenue": 30}},
        {"userId": "ann", "event": "Order Completed", "properties": {"revenue": 12}},
        {"userId": "bob", "event": "Order Completed", "properties": {"revenue": 99}},
    ]
    assert (await tracking.post("/track/batch", json={"batch": batch})).status_code == 200


async def test_crud_and_versions(api):
    r = await api.post("/api/v1/segments", json={"name": "Pro", "definition": PRO, "description": "paying"})
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["version"] == 1 and seg["member_count"] is None and seg["definition"] == PRO
    assert (await api.post("/api/v1/segments", json={"name": "Pro", "definition": PRO})).status_code == 409
    listed = (await api.get("/api/v1/segments")).json()
    assert [s["id"] for s in listed["data"]] == [seg["id"]]
    patched = (
        await api.patch(
            f"/api/v1/segments/{seg['id']}", json={"definition": {"type": "all", "conditions": [PRO, BUYER]}}
        )
    ).json()
    assert patched["version"] == 2 and patched["definition"]["type"] == "all"
    renamed = (await api.patch(f"/api/v1/segments/{seg['id']}", json={"name": "Pro buyers"})).json()
    assert renamed["name"] == "Pro buyers" and renamed["version"] == 2
    assert (await api.delete(f"/api/v1/segments/{seg['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/segments/{seg['id']}")).status_code == 404


async def test_invalid_definitions_name_the_bad_node(api):
    cases = [
        (
            {
                "type": "all",
                "conditions": [PRO, {"type": "trait", "path": "age", "op": "gt", "value": "old"}],
            },
            "body.definition.all.conditions.1.trait",
            "numbers",
        ),
        ({"type": "any", "conditions": [{"type": "bogus"}]}, "body.definition.any.conditions.0", "tag"),
        (
            {"type": "trait", "path": "bad path!", "op": "eq", "value": 1},
            "body.definition.trait.path",
            "pattern",
        ),
        (
            {"type": "event", "name": "X", "within": {"last": 3, "from": "2026-01-01T00:00:00Z"}},
            "body.definition.event.within",
            "either",
        ),
        (
            {"type": "event", "name": "X", "count": {"op": "~", "value": 1}},
            "body.definition.event.count.op",
            "",
        ),
        (
            {"type": "trait", "path": "d", "op": "before", "value": "yesterday"},
            "body.definition.trait",
            "date",
        ),
    ]
    for definition, loc, words in cases:
        r = await api.post("/api/v1/segments", json={"name": "bad", "definition": definition})
        assert r.status_code == 422, (definition, r.text)
        detail = r.json()["detail"]
        assert any(d["loc"].startswith(loc) and words in d["msg"] for d in detail), (loc, detail)

    deep = PRO
    for _ in range(9):
        deep = {"type": "not", "condition": deep}
    r = await api.post("/api/v1/segments", json={"name": "deep", "definition": deep})
    assert r.status_code == 422 and "levels deep" in str(r.json()["detail"])


async def test_references_must_exist_and_not_cycle(api, sessionmaker, api_app):
    a = (await api.post("/api/v1/segments", json={"name": "A", "definition": PRO})).json()
    ref_a = {"type": "segment", "segment_id": a["id"]}
    b = (await api.post("/api/v1/segments", json={"name": "B", "definition": ref_a})).json()
    ref_b = {"type": "segment", "segment_id": b["id"], "op": "not_member"}
    cycle = await api.patch(f"/api/v1/segments/{a['id']}", json={"definition": ref_b})
    assert cycle.status_code == 422 and "cycle" in str(cycle.json()["detail"])
    selfref = await api.patch(
        f"/api/v1/segments/{a['id']}", json={"definition": {"type": "segment", "segment_id": a["id"]}}
    )
    assert selfref.status_code == 422
    missing = await api.post(
        "/api/v1/segments",
        json={
            "name": "C",
            "definition": {"type": "segment", "segment_id": "00000000-0000-0000-0000-000000000009"},
        },
    )
    assert missing.status_code == 422
    assert (await api.delete(f"/api/v1/segments/{a['id']}")).status_code == 409
    # Another workspace can neither see nor reference these.
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(
        base_url=api_app.state.base_url, headers={"Authorization": f"Bearer {other.secret_key}"}
    ) as client:
        assert (await client.get(f"/api/v1/segments/{a['id']}")).status_code == 404
        assert (await client.get("/api/v1/segments")).json()["data"] == []
        stolen = await client.post("/api/v1/segments/estimate", json={"definition": ref_a})
        assert stolen.status_code == 422


async def test_estimate_counts_without_saving(api, tracking, engine, workspace):
    await _seed(tracking)
    r = await api.post(
        "/api/v1/segments/estimate", json={"definition": {"type": "all", "conditions": [PRO, BUYER]}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 1 and [p["external_id"] for p in body["sample"]] == ["ann"]
    r = await api.post("/api/v1/segments/estimate", json={"definition": PRO, "sample_size": 0})
    assert r.json()["count"] == 2 and r.json()["sample"] == []
    async with engine.connect() as conn:
        saved = (
            await conn.execute(
                text("SELECT count(*) FROM segments WHERE workspace_id = :ws"), {"ws": workspace.workspace_id}
            )
        ).scalar()
    assert saved == 0


async def test_recalculate_runs_the_workflow_and_stores_members(
    api, tracking, worker, temporal_client, engine, workspace
):
    await _seed(tracking)
    seg = (await api.post("/api/v1/segments", json={"name": "Pro", "definition": PRO})).json()
    r = await api.post(f"/api/v1/segments/{seg['id']}/recalculate", params={"wait": 30})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "completed" and run["workflow_id"] == f"segment-refresh:{seg['id']}"
    assert (run["member_count"], run["entered"], run["exited"]) == (2, 2, 0)
    assert (await api.get(f"/api/v1/segments/{seg['id']}")).json()["member_count"] == 2

    # Members page through with a cursor.
    first = (await api.get(f"/api/v1/segments/{seg['id']}/members", params={"limit": 1})).json()
    second = (
        await api.get(
            f"/api/v1/segments/{seg['id']}/members", params={"limit": 1, "cursor": first["next_cursor"]}
        )
    ).json()
    assert second["next_cursor"] is None
    assert {m["external_id"] for m in first["data"] + second["data"]} == {"ann", "bob"}

    # Bob downgrades: the next refresh records him leaving.
    await tracking.post("/identify", json={"userId": "bob", "traits": {"plan": "free"}})
    again = (await api.post(f"/api/v1/segments/{seg['id']}/recalculate", params={"wait": 30})).json()
    assert (again["member_count"], again["entered"], again["exited"]) == (1, 0, 1)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT e.name, p.external_id, e.properties->>'segment_id' "
                    "FROM events e JOIN profiles p ON p.id = e.profile_id "
                    "WHERE e.workspace_id = :ws AND e.name LIKE 'Segment %' "
                    "ORDER BY e.occurred_at, p.external_id"
                ),
                {"ws": workspace.workspace_id},
            )
        ).all()
    assert [(n, who) for n, who, _ in rows] == [
        ("Segment Entered", "ann"),
        ("Segment Entered", "bob"),
        ("Segment Exited", "bob"),
    ]
    assert {sid for _, _, sid in rows} == {seg["id"]}

    # The runs are found in Temporal by workspace (visibility catches up eventually).
    for _ in range(50):
        found = [
            w
            async for w in temporal_client.list_workflows(
                f'WorkspaceId = "{workspace.workspace_id}" AND WorkflowType = "SegmentRefreshWorkflow"'
            )
        ]
        if len(found) >= 2:
            break
        await asyncio.sleep(0.2)
    assert len(found) >= 2 and all(w.workflow_type == "SegmentRefreshWorkflow" for w in found)


async def test_check_one_profile_now(api, tracking):
    await _seed(tracking)
    seg = (await api.post("/api/v1/segments", json={"name": "Buyers", "definition": BUYER})).json()
    ann = (await api.get("/api/v1/profiles", params={"external_id": "ann"})).json()["data"][0]["id"]
    bob = (await api.get("/api/v1/profiles", params={"external_id": "bob"})).json()["data"][0]["id"]
    assert (await api.get(f"/api/v1/segments/{seg['id']}/profiles/{ann}")).json()["member"] is True
    assert (await api.get(f"/api/v1/segments/{seg['id']}/profiles/{bob}")).json()["member"] is False
    assert (
        await api.get(f"/api/v1/segments/{seg['id']}/profiles/00000000-0000-0000-0000-000000000000")
    ).status_code == 404


async def test_workspace_refresh_interval(api):
    assert (await api.get("/api/v1/workspace/settings")).json() == {
        "segment_refresh_minutes": 5,
        "timezone": "UTC",
        "allowed_origins": None,
        "frequency_cap": None,
    }
    r = await api.put("/api/v1/workspace/settings", json={"segment_refresh_minutes": 15})
    assert r.status_code == 200 and r.json()["segment_refresh_minutes"] == 15
    assert (
        await api.put("/api/v1/workspace/settings", json={"segment_refresh_minutes": 0})
    ).status_code == 422
    assert (await api.put("/api/v1/workspace/settings", json={"timezone": "Mars/Olympus"})).status_code == 422
    r = await api.put("/api/v1/workspace/settings", json={"timezone": "Europe/Paris"})
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Paris"


async def test_temporal_down_is_503_not_500(settings, workspace, sessionmaker):
    from api.app import create_app
    from tests.support.servers import free_port, serve

    app = create_app(settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"}))
    async with (
        serve(app) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {workspace.secret_key}"}, timeout=30
        ) as client,
    ):
        seg = (await client.post("/api/v1/segments", json={"name": "P", "definition": PRO})).json()
        r = await client.post(f"/api/v1/segments/{seg['id']}/recalculate")
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
        # Everything that does not need Temporal still works.
        assert (await client.get(f"/api/v1/segments/{seg['id']}")).status_code == 200


LEFT_NEWS = {"type": "topic", "topic": "newsletter", "subscribed": False}


async def _topic_people(api, tracking) -> dict[str, str]:
    await _seed(tracking)
    r = await api.post("/api/v1/topics", json={"key": "newsletter", "name": "Newsletter"})
    assert r.status_code == 201
    ids = {}
    for user in ("ann", "bob", "cat"):
        ids[user] = (await api.get("/api/v1/profiles", params={"external_id": user})).json()["data"][0]["id"]
    r = await api.put(f"/api/v1/profiles/{ids['ann']}/topics/newsletter", json={"subscribed": False})
    assert r.status_code == 200
    return ids


async def test_topic_condition_estimate_and_check(api, tracking):
    ids = await _topic_people(api, tracking)
    left = await api.post("/api/v1/segments/estimate", json={"definition": LEFT_NEWS, "sample_size": 5})
    assert left.status_code == 200, left.text
    assert left.json()["count"] == 1
    subscribed_pros = {
        "type": "all",
        "conditions": [PRO, {"type": "topic", "topic": "newsletter"}],
    }
    r = await api.post("/api/v1/segments/estimate", json={"definition": subscribed_pros})
    assert r.json()["count"] == 1  # bob: pro and still subscribed
    seg = (await api.post("/api/v1/segments", json={"name": "Left news", "definition": LEFT_NEWS})).json()
    assert (await api.get(f"/api/v1/segments/{seg['id']}/profiles/{ids['ann']}")).json()["member"] is True
    assert (await api.get(f"/api/v1/segments/{seg['id']}/profiles/{ids['bob']}")).json()["member"] is False
    for bad in (
        {"type": "topic", "topic": "News Letter"},
        {"type": "topic", "topic": "newsletter", "subscribed": "no"},
        {"type": "topic"},
        {"type": "topic", "topic": "newsletter", "op": "eq"},
    ):
        r = await api.post("/api/v1/segments", json={"name": "Bad", "definition": bad})
        assert r.status_code == 422, bad


async def test_topic_choices_recheck_segments(api, tracking, worker, engine, workspace):
    ids = await _topic_people(api, tracking)
    seg = (await api.post("/api/v1/segments", json={"name": "Left news", "definition": LEFT_NEWS})).json()
    await asyncio.sleep(0.5)
    # Changes made after the segment exists reach its members through the
    # `Topic …` events, without a refresh.
    for user in ("bob", "cat"):
        r = await api.put(f"/api/v1/profiles/{ids[user]}/topics/newsletter", json={"subscribed": False})
        assert r.json()["changed"] is True
    await api.put(f"/api/v1/profiles/{ids['cat']}/topics/newsletter", json={"subscribed": True})

    async def members():
        listed = {
            m["profile_id"] for m in (await api.get(f"/api/v1/segments/{seg['id']}/members")).json()["data"]
        }
        return ids["bob"] in listed and ids["cat"] not in listed

    for _ in range(150):
        if await members():
            break
        await asyncio.sleep(0.2)
    assert await members()
    async with engine.connect() as conn:
        entered = await conn.scalar(
            text(
                "SELECT count(*) FROM events WHERE workspace_id = :w AND name = 'Segment Entered' "
                "AND profile_id = :p"
            ),
            {"w": workspace.workspace_id, "p": ids["bob"]},
        )
    assert entered == 1
