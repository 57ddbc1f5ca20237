"""Flows API: graphs validated with the node named, CRUD, the lifecycle,
versioning, pagination and workspace isolation."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from definitions.flows import MAX_NODES, FlowGraph
from flows import runtime
from tests.conftest import new_workspace

MISSING = "00000000-0000-7000-8000-00000000dead"


async def make_template(api, name: str = "Reminder") -> str:
    r = await api.post(
        "/api/v1/templates",
        json={"name": name, "subject": "Hi", "html": "<p>Come back</p>", "from_email": "shop@example.com"},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def make_segment(api, name: str = "Pro") -> str:
    r = await api.post(
        "/api/v1/segments",
        json={"name": name, "definition": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def cart_graph(template_id: str, **extra) -> dict:
    """The abandoned-cart flow: wait for the order, else remind."""
    return {
        "trigger": {"type": "event", "name": "Cart Updated", "enrollment_key": "properties.cart_id"},
        "start": "wait_buy",
        "nodes": [
            {
                "id": "wait_buy",
                "type": "wait_for_event",
                "name": "Order Completed",
                "match_key": True,
                "timeout_seconds": 3600,
                "on_event": "done",
                "on_timeout": "remind",
            },
            {"id": "remind", "type": "send_email", "template_id": template_id, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
        **extra,
    }


def chain(n: int) -> list[dict]:
    """n wait nodes in a line."""
    return [
        {"id": f"n{i}", "type": "wait", "seconds": 60, **({"next": f"n{i + 1}"} if i + 1 < n else {})}
        for i in range(n)
    ]


async def create(api, name: str, definition: dict) -> httpx.Response:
    return await api.post("/api/v1/flows", json={"name": name, "definition": definition})


@pytest.fixture
def changes(monkeypatch) -> list[uuid.UUID]:
    """Flow ids passed to the runtime hook `flow_changed`, in call order."""
    calls: list[uuid.UUID] = []

    async def record(session, workspace_id, flow_id) -> None:
        calls.append(flow_id)

    monkeypatch.setattr(runtime, "flow_changed", record)
    return calls


async def test_create_get_list_and_delete(api, engine, workspace):
    template = await make_template(api)
    r = await api.post(
        "/api/v1/flows",
        json={"name": "Abandoned cart", "description": "remind", "definition": cart_graph(template)},
    )
    assert r.status_code == 201, r.text
    flow = r.json()
    assert (flow["status"], flow["version"], flow["description"]) == ("draft", 1, "remind")
    # The stored definition is the parsed graph, defaults spelled out.
    stored = FlowGraph.model_validate(flow["definition"])
    assert stored == FlowGraph.model_validate(cart_graph(template))
    assert flow["definition"]["settings"]["reentry"] == "once"

    got = (await api.get(f"/api/v1/flows/{flow['id']}")).json()
    assert got == flow
    listed = (await api.get("/api/v1/flows")).json()
    assert [f["id"] for f in listed["data"]] == [flow["id"]] and listed["next_cursor"] is None
    assert "definition" not in listed["data"][0]

    async with engine.connect() as conn:
        versions = (
            await conn.execute(
                text("SELECT version, workspace_id FROM flow_versions WHERE flow_id = :f"), {"f": flow["id"]}
            )
        ).all()
    assert versions == [(1, workspace.workspace_id)]

    dup = await create(api, "Abandoned cart", cart_graph(template))
    assert dup.status_code == 409 and "exists" in dup.json()["detail"]

    assert (await api.delete(f"/api/v1/flows/{flow['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/flows/{flow['id']}")).status_code == 404
    async with engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT count(*) FROM flow_versions WHERE flow_id = :f"), {"f": flow["id"]}
            )
        ).scalar()
    assert left == 0


async def test_pagination_newest_first(api):
    ids = []
    for i in range(5):
        r = await create(api, f"flow {i}", {"trigger": {"type": "api"}, "start": "n0", "nodes": chain(1)})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    seen, cursor = [], None
    while True:
        page = (
            await api.get("/api/v1/flows", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        ).json()
        assert len(page["data"]) <= 2
        seen += [f["id"] for f in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert (await api.get("/api/v1/flows", params={"cursor": "not a cursor!"})).status_code == 400


def _names(response: httpx.Response, loc: str, needle: str) -> bool:
    return any(d["loc"] == loc and needle in d["msg"] for d in response.json()["detail"])


async def test_invalid_graphs_name_the_node(api):
    template = await make_template(api)
    api_trigger = {"type": "api"}
    cases = [
        # A cycle.
        (
            {
                "trigger": api_trigger,
                "start": "a",
                "nodes": [
                    {"id": "a", "type": "wait", "seconds": 5, "next": "b"},
                    {"id": "b", "type": "wait", "seconds": 5, "next": "a"},
                ],
            },
            "body.definition.nodes.b",
            "cycle",
        ),
        # A node nothing leads to.
        (
            {
                "trigger": api_trigger,
                "start": "a",
                "nodes": [{"id": "a", "type": "exit"}, {"id": "lost", "type": "exit"}],
            },
            "body.definition.nodes.lost",
            "not reachable",
        ),
        # An edge to nowhere.
        (
            {
                "trigger": api_trigger,
                "start": "a",
                "nodes": [{"id": "a", "type": "wait", "seconds": 5, "next": "zz"}],
            },
            "body.definition.nodes.a",
            "no node 'zz'",
        ),
        # A template that is not there.
        (cart_graph(MISSING), "body.definition.nodes.remind", f"no template {MISSING}"),
        # A second trigger: a list where one is expected.
        (
            {**cart_graph(template), "trigger": [{"type": "api"}, {"type": "event", "name": "X"}]},
            "body.definition.trigger",
            "exactly one trigger",
        ),
        # An unknown node type, named by its id.
        (
            {"trigger": api_trigger, "start": "a", "nodes": [{"id": "a", "type": "teleport"}]},
            "body.definition.nodes.a",
            "teleport",
        ),
        # A field of a node: the index is replaced by the id, the tag dropped.
        (
            {"trigger": api_trigger, "start": "a", "nodes": [{"id": "a", "type": "wait", "seconds": 0}]},
            "body.definition.nodes.a.seconds",
            "greater than or equal to 1",
        ),
        # Too many nodes.
        (
            {"trigger": api_trigger, "start": "n0", "nodes": chain(MAX_NODES + 1)},
            "body.definition.nodes",
            f"at most {MAX_NODES}",
        ),
        # Split shares that do not add up.
        (
            {
                "trigger": api_trigger,
                "start": "s",
                "nodes": [{"id": "s", "type": "split", "paths": [{"percent": 60}, {"percent": 60}]}],
            },
            "body.definition.nodes.s",
            "add up to 120",
        ),
        # Trigger fields.
        (
            {"trigger": {"type": "event", "name": ""}, "start": "a", "nodes": [{"id": "a", "type": "exit"}]},
            "body.definition.trigger.name",
            "at least 1",
        ),
    ]
    for definition, loc, needle in cases:
        r = await create(api, "bad", definition)
        assert r.status_code == 422, (loc, r.text)
        assert r.json()["error"] == "validation_error"
        assert _names(r, loc, needle), (loc, needle, r.json()["detail"])
    # Values that could not be stored are refused, not a 500.
    huge = {
        "trigger": api_trigger,
        "start": "u",
        "nodes": [{"id": "u", "type": "update_profile", "traits": {"n": 2**70}}],
    }
    r = await create(api, "huge", huge)
    assert r.status_code == 422 and "integer out of range" in str(r.json()["detail"]), r.text
    # Exactly the maximum is fine.
    ok = await create(api, "biggest", {"trigger": api_trigger, "start": "n0", "nodes": chain(MAX_NODES)})
    assert ok.status_code == 201, ok.text
    assert (await api.get("/api/v1/flows")).json()["data"][0]["name"] == "biggest"


async def test_segment_references_are_checked_everywhere(api):
    segment = await make_segment(api)
    member = {"type": "segment", "segment_id": segment}
    gone = {"type": "segment", "segment_id": MISSING}

    def graph(trigger_segment: str, branch_cond: dict, exit_cond: dict) -> dict:
        return {
            "trigger": {"type": "segment", "segment_id": trigger_segment},
            "start": "b",
            "nodes": [
                {"id": "b", "type": "branch", "branches": [{"condition": branch_cond, "next": "x"}]},
                {"id": "x", "type": "exit"},
            ],
            "settings": {"exit_condition": exit_cond},
        }

    assert (await create(api, "fine", graph(segment, member, member))).status_code == 201
    r = await create(api, "bad trigger", graph(MISSING, member, member))
    assert r.status_code == 422 and _names(r, "body.definition.trigger", "no segment")
    nested = {"type": "all", "conditions": [{"type": "not", "condition": gone}]}
    r = await create(api, "bad branch", graph(segment, nested, member))
    assert r.status_code == 422 and _names(r, "body.definition.nodes.b", f"no segment {MISSING}")
    r = await create(api, "bad exit", graph(segment, member, gone))
    assert r.status_code == 422 and _names(r, "body.definition.settings.exit_condition", "no segment")
    # Branch conditions keep the segment language's depth limit.
    deep = member
    for _ in range(9):
        deep = {"type": "not", "condition": deep}
    r = await create(api, "deep", graph(segment, deep, member))
    assert r.status_code == 422 and _names(r, "body.definition.nodes.b", "levels deep")


async def test_lifecycle_transitions(api, changes):
    template = await make_template(api)
    flow = (await create(api, "Cart", cart_graph(template))).json()
    url = f"/api/v1/flows/{flow['id']}"

    async def move(action: str) -> httpx.Response:
        return await api.post(f"{url}/{action}")

    wrong = await move("pause")
    assert wrong.status_code == 409 and "flow is draft" in wrong.json()["detail"]
    r = await move("activate")
    assert r.status_code == 200 and r.json()["status"] == "active"
    again = await move("activate")
    assert again.status_code == 409 and "flow is active" in again.json()["detail"]
    deleted = await api.delete(url)
    assert deleted.status_code == 409 and "archive" in deleted.json()["detail"]
    assert (await move("pause")).json()["status"] == "paused"
    assert (await move("pause")).status_code == 409
    assert (await move("activate")).json()["status"] == "active"
    assert (await move("archive")).json()["status"] == "archived"
    for action in ("activate", "pause", "archive"):
        r = await move(action)
        assert r.status_code == 409 and "flow is archived" in r.json()["detail"], action
    edit = await api.patch(url, json={"name": "renamed"})
    assert edit.status_code == 409 and "archived" in edit.json()["detail"]
    assert (await api.delete(url)).status_code == 409
    # The runtime heard of every status change, and of nothing that failed.
    assert changes == [uuid.UUID(flow["id"])] * 4
    # A draft can be archived straight away.
    draft = (await create(api, "Other", cart_graph(template))).json()
    assert (await api.post(f"/api/v1/flows/{draft['id']}/archive")).json()["status"] == "archived"


async def test_activate_revalidates_references(api):
    template = await make_template(api)
    flow = (await create(api, "Cart", cart_graph(template))).json()
    assert (await api.delete(f"/api/v1/templates/{template}")).status_code == 204
    r = await api.post(f"/api/v1/flows/{flow['id']}/activate")
    assert r.status_code == 422, r.text
    assert _names(r, "definition.nodes.remind", f"no template {template}")
    assert (await api.get(f"/api/v1/flows/{flow['id']}")).json()["status"] == "draft"


async def test_versions(api, changes):
    template = await make_template(api)
    other = await make_template(api, "Second reminder")
    flow = (await create(api, "Cart", cart_graph(template))).json()
    url = f"/api/v1/flows/{flow['id']}"

    # A draft's definition is replaced in place.
    r = await api.patch(url, json={"definition": cart_graph(other)})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert r.json()["definition"]["nodes"][1]["template_id"] == other
    versions = (await api.get(f"{url}/versions")).json()["data"]
    assert [v["version"] for v in versions] == [1] and versions[0]["definition"] == r.json()["definition"]

    # Once activated, an edit is a new version; the old one stays as it was.
    assert (await api.post(f"{url}/activate")).status_code == 200
    r = await api.patch(url, json={"definition": cart_graph(template, settings={"reentry": "always"})})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["status"]) == (2, "active")
    assert r.json()["definition"]["settings"]["reentry"] == "always"
    # The same definition again adds nothing.
    same = await api.patch(url, json={"definition": cart_graph(template, settings={"reentry": "always"})})
    assert same.json()["version"] == 2
    # A paused flow versions too; a bad definition changes nothing.
    assert (await api.post(f"{url}/pause")).status_code == 200
    bad = await api.patch(url, json={"definition": cart_graph(MISSING)})
    assert bad.status_code == 422 and _names(bad, "body.definition.nodes.remind", "no template")
    r = await api.patch(url, json={"definition": cart_graph(other), "name": "Cart v3", "description": None})
    assert (r.json()["version"], r.json()["name"], r.json()["description"]) == (3, "Cart v3", None)

    page = (await api.get(f"{url}/versions")).json()
    assert [v["version"] for v in page["data"]] == [3, 2, 1] and page["next_cursor"] is None
    assert page["data"][2]["definition"]["nodes"][1]["template_id"] == other
    assert page["data"][1]["definition"]["settings"]["reentry"] == "always"
    first = (await api.get(f"{url}/versions", params={"limit": 2})).json()
    rest = (await api.get(f"{url}/versions", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    for bad in ("x", "²", "-1"):
        assert (await api.get(f"{url}/versions", params={"cursor": bad})).status_code == 400
    assert [v["version"] for v in first["data"] + rest["data"]] == [3, 2, 1] and rest["next_cursor"] is None
    # Activate, pause, the two new versions, and the draft edit.
    assert changes.count(uuid.UUID(flow["id"])) == 5


async def test_patch_rules(api):
    template = await make_template(api)
    a = (await create(api, "A", cart_graph(template))).json()
    await create(api, "B", cart_graph(template))
    taken = await api.patch(f"/api/v1/flows/{a['id']}", json={"name": "B"})
    assert taken.status_code == 409
    for body in ({"name": None}, {"definition": None}, {"status": "active"}):
        r = await api.patch(f"/api/v1/flows/{a['id']}", json=body)
        assert r.status_code == 422, (body, r.text)
    r = await api.patch(f"/api/v1/flows/{a['id']}", json={"description": "kept"})
    assert r.json()["description"] == "kept" and r.json()["name"] == "A"


async def test_another_workspace_sees_nothing(api, api_app, sessionmaker):
    template = await make_template(api)
    segment = await make_segment(api)
    flow = (await create(api, "Cart", cart_graph(template))).json()
    url = f"/api/v1/flows/{flow['id']}"
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(
        base_url=api_app.state.base_url, headers={"Authorization": f"Bearer {other.secret_key}"}
    ) as client:
        assert (await client.get("/api/v1/flows")).json()["data"] == []
        eid = uuid.uuid4()
        for method, path, body in [
            ("GET", url, None),
            ("PATCH", url, {"name": "mine"}),
            ("DELETE", url, None),
            ("GET", f"{url}/versions", None),
            ("POST", f"{url}/activate", None),
            ("POST", f"{url}/pause", None),
            ("POST", f"{url}/archive", None),
            ("POST", f"{url}/enroll", {"external_id": "x"}),
            ("POST", f"{url}/enroll-segment", {"segment_id": segment}),
            ("GET", f"{url}/enrollments", None),
            ("GET", f"{url}/enrollments/{eid}", None),
            ("POST", f"{url}/enrollments/{eid}/exit", None),
            ("GET", f"{url}/stats", None),
        ]:
            r = await client.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        # Nor can it name this workspace's template or segment in its own flows.
        r = await client.post("/api/v1/flows", json={"name": "Cart", "definition": cart_graph(template)})
        assert r.status_code == 422 and _names(r, "body.definition.nodes.remind", "no template")
    assert (await api.get(url)).json()["name"] == "Cart"
