"""Flows API around enrollments, against the real flow runtime
(`flows/runtime.py`), worker and Temporal dev server: enroll one person or
a segment, list and inspect enrollments, make one exit, and the stats.
Listing and stats also run over seeded rows (what the runtime writes), so
every count can be stated exactly."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from temporalio.client import WorkflowExecutionStatus

from core.ids import uuid7
from flows.schemas import MAX_PAYLOAD_BYTES
from tests.flows.support import wait_for
from tests.flows.test_api import cart_graph, create, make_segment, make_template

INSERT_ENROLLMENT = text(
    """
    INSERT INTO flow_enrollments (id, workspace_id, flow_id, version, profile_id, workflow_id, status,
                                  current_node, payload, entered_at, completed_at, converted_at)
    VALUES (:id, :ws, :flow, :version, :profile, :wf, :status, :node, CAST(:payload AS jsonb), :entered,
            :completed, :converted)
    """
)


async def add_enrollment(
    conn, ws, flow, profile, status="running", node=None, converted=False, **kw
) -> uuid.UUID:
    # uuid7 orders by millisecond only: keep the rows of a test in order.
    await asyncio.sleep(0.002)
    enrollment_id = uuid7()
    now = datetime.now(UTC)
    await conn.execute(
        INSERT_ENROLLMENT,
        {
            "id": enrollment_id,
            "ws": ws,
            "flow": flow,
            "version": kw.get("version", 1),
            "profile": profile,
            "wf": f"flow-run:{enrollment_id}",
            "status": status,
            "node": node,
            "payload": kw.get("payload", "{}"),
            "entered": now,
            "completed": None if status == "running" else now,
            "converted": now if converted else None,
        },
    )
    return enrollment_id


async def add_step(conn, enrollment, flow, seq, node, edge=None, outcome=None, left=True) -> None:
    await conn.execute(
        text(
            "INSERT INTO flow_steps (enrollment_id, seq, flow_id, node_id, edge, outcome, left_at) "
            "VALUES (:e, :seq, :flow, :node, :edge, :outcome, :left)"
        ),
        {
            "e": enrollment,
            "seq": seq,
            "flow": flow,
            "node": node,
            "edge": edge,
            "outcome": outcome,
            "left": datetime.now(UTC) if left else None,
        },
    )


async def make_profile(api, external_id: str, email: str | None = None) -> str:
    r = await api.post("/api/v1/profiles", json={"external_id": external_id, "email": email})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def active_flow(api, name: str = "Cart") -> dict:
    r = await create(api, name, cart_graph(await make_template(api, f"{name} template")))
    assert r.status_code == 201, r.text
    flow = r.json()
    assert (await api.post(f"/api/v1/flows/{flow['id']}/activate")).status_code == 200
    return flow


def hold_graph(reentry: str = "once") -> dict:
    """Enrolled through the API, then a long wait: a run that stays put."""
    return {
        "trigger": {"type": "api"},
        "start": "hold",
        "nodes": [
            {"id": "hold", "type": "wait", "seconds": 3600, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
        "settings": {"reentry": reentry},
    }


async def created_active(api, name: str, graph: dict) -> dict:
    r = await create(api, name, graph)
    assert r.status_code == 201, r.text
    assert (await api.post(f"/api/v1/flows/{r.json()['id']}/activate")).status_code == 200
    return r.json()


async def listed(api, flow_id: str, **params: Any) -> list[dict]:
    return (await api.get(f"/api/v1/flows/{flow_id}/enrollments", params=params)).json()["data"]


async def test_enroll_exit_and_reentry(api, worker, temporal_client, settings):
    flow = await created_active(api, "Hold", hold_graph("always"))
    base = f"/api/v1/flows/{flow['id']}"
    ann = await make_profile(api, "ann", "ann@example.com")
    r = await api.post(f"{base}/enroll", json={"email": "ANN@example.com", "payload": {"coupon": "X1"}})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["status"] == "started" and started["enrollment_id"] is not None
    assert started["temporal_ui"] == (
        f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{started['workflow_id']}"
    )

    async def waiting() -> list[dict] | None:
        rows = await listed(api, flow["id"])
        return rows if rows and rows[0]["current_node"] == "hold" else None

    [row] = await wait_for(waiting)
    assert (row["id"], row["profile_id"], row["status"], row["version"]) == (
        started["enrollment_id"], ann, "running", 1
    )  # fmt: skip
    assert row["workflow_id"] == started["workflow_id"] and row["temporal_ui"] == started["temporal_ui"]
    detail = (await api.get(f"{base}/enrollments/{row['id']}")).json()
    assert detail["payload"] == {"coupon": "X1"}
    assert [(s["node_id"], s["left_at"]) for s in detail["steps"]] == [("hold", None)]
    stats = (await api.get(f"{base}/stats")).json()
    assert stats["enrollments"]["enrolled"] == 1 and stats["enrollments"]["running"] == 1
    assert [(n["node_id"], n["entered"], n["waiting"]) for n in stats["nodes"]] == [
        ("hold", 1, 1),
        ("done", 0, 0),
    ]

    # By another identity of the same person: the run in progress is found.
    again = (await api.post(f"{base}/enroll", json={"external_id": " ann "})).json()
    assert again["status"] == "already_enrolled" and again["workflow_id"] == started["workflow_id"]

    exited = await api.post(f"{base}/enrollments/{row['id']}/exit")
    assert exited.status_code == 202, exited.text
    assert exited.json()["status"] == "exited" and exited.json()["completed_at"] is not None
    handle = temporal_client.get_workflow_handle(started["workflow_id"])

    async def closed() -> bool:
        return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING

    await wait_for(closed)
    twice = await api.post(f"{base}/enrollments/{row['id']}/exit")
    assert twice.status_code == 409 and "exited" in twice.json()["detail"]
    # Re-entry `always`: a new run starts once the last one has ended.
    anew = (await api.post(f"{base}/enroll", json={"profile_id": ann})).json()
    assert anew["status"] == "started" and anew["enrollment_id"] != started["enrollment_id"]
    rows = await wait_for(lambda: _count(api, flow["id"], 2))
    assert [e["status"] for e in rows] == ["running", "exited"]

    # Re-entry `once`: after one run, the person is refused, and nothing new runs.
    once = await created_active(api, "Once", hold_graph("once"))
    first = (await api.post(f"/api/v1/flows/{once['id']}/enroll", json={"profile_id": ann})).json()
    [row] = await wait_for(lambda: _count(api, once["id"], 1))
    assert row["id"] == first["enrollment_id"]
    exit_url = f"/api/v1/flows/{once['id']}/enrollments/{row['id']}/exit"
    assert (await api.post(exit_url)).status_code == 202
    refused = (await api.post(f"/api/v1/flows/{once['id']}/enroll", json={"profile_id": ann})).json()
    assert (
        refused["status"] == "refused" and refused["enrollment_id"] is None and refused["temporal_ui"] is None
    )
    assert [e["status"] for e in await listed(api, once["id"])] == ["exited"]
    assert (await api.get(f"/api/v1/flows/{once['id']}/stats")).json()["enrollments"]["exited"] == 1


async def _count(api, flow_id: str, n: int) -> list[dict] | None:
    rows = await listed(api, flow_id)
    return rows if len(rows) >= n else None


async def test_enroll_refusals(api):
    flow = await created_active(api, "Hold", hold_graph())
    url = f"/api/v1/flows/{flow['id']}/enroll"
    await make_profile(api, "ann", "ann@example.com")
    bad_bodies = [
        ({}, "exactly one"),
        ({"email": "ann@example.com", "external_id": "ann"}, "got email, external_id"),
        ({"email": "not-an-address"}, "email"),
        ({"external_id": "ann", "payload": {"blob": "x" * MAX_PAYLOAD_BYTES}}, "bytes"),
        ({"external_id": "ann", "payload": [1, 2]}, "dictionary"),
        ({"external_id": "ann", "payload": {"text": "a\u0000b"}}, "NUL"),
        ({"external_id": "ann", "payload": {"big": 2**70}}, "integer out of range"),
        ({"external_id": "ann", "unknown": 1}, "Extra inputs"),
    ]
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"d": deep}
    bad_bodies.append(({"external_id": "ann", "payload": deep}, "nested deeper than 32 levels"))
    for body, needle in bad_bodies:
        r = await api.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert needle in str(r.json()["detail"]), (needle, r.json())
    missing = await api.post(url, json={"external_id": "nobody"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    assert (
        await api.post(f"/api/v1/flows/{uuid.uuid4()}/enroll", json={"external_id": "ann"})
    ).status_code == 404
    assert (await api.post(f"/api/v1/flows/{flow['id']}/pause")).status_code == 200
    paused = await api.post(url, json={"external_id": "ann"})
    assert paused.status_code == 409 and "flow is paused" in paused.json()["detail"]
    draft = (await create(api, "Draft", hold_graph())).json()
    r = await api.post(f"/api/v1/flows/{draft['id']}/enroll", json={"external_id": "ann"})
    assert r.status_code == 409 and "flow is draft" in r.json()["detail"]
    assert await listed(api, flow["id"]) == []


async def test_enroll_segment(api, worker):
    segment = await make_segment(api)
    for who, plan in (("ann", "pro"), ("bob", "pro"), ("cat", "free")):
        r = await api.post("/api/v1/profiles", json={"external_id": who, "traits": {"plan": plan}})
        assert r.status_code == 201, r.text
    refresh = await api.post(f"/api/v1/segments/{segment}/recalculate", params={"wait": 30})
    assert refresh.json()["member_count"] == 2, refresh.text

    draft = (await create(api, "Draft", hold_graph())).json()
    r = await api.post(f"/api/v1/flows/{draft['id']}/enroll-segment", json={"segment_id": segment})
    assert r.status_code == 409 and "flow is draft" in r.json()["detail"]
    flow = await created_active(api, "Hold", hold_graph("always"))
    url = f"/api/v1/flows/{flow['id']}/enroll-segment"
    r = await api.post(url, json={"segment_id": str(uuid.uuid4())})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.segment_id"
    r = await api.post(url, json={"segment_id": segment})
    assert r.status_code == 202, r.text
    assert r.json() == {"enrolled": 2, "already_enrolled": 0, "refused": 0}

    async def both() -> list[dict] | None:
        rows = await listed(api, flow["id"], status="running")
        return rows if len(rows) == 2 else None

    await wait_for(both)
    # A second bulk enrollment finds both runs in progress.
    r = await api.post(url, json={"segment_id": segment})
    assert r.json() == {"enrolled": 0, "already_enrolled": 2, "refused": 0}
    # Archiving asks them to exit.
    assert (await api.post(f"/api/v1/flows/{flow['id']}/archive")).status_code == 200
    assert [e["status"] for e in await listed(api, flow["id"])] == ["exited", "exited"]


async def test_enrollments_list_filter_and_page(api, engine, workspace, settings):
    flow = await active_flow(api)
    other_flow = await active_flow(api, "Other")
    ann = uuid.UUID(await make_profile(api, "ann"))
    bob = uuid.UUID(await make_profile(api, "bob"))
    ws = workspace.workspace_id
    async with engine.begin() as conn:
        first = await add_enrollment(conn, ws, flow["id"], ann, status="completed", node="done")
        second = await add_enrollment(conn, ws, flow["id"], bob, node="wait_buy", payload='{"cart": 7}')
        third = await add_enrollment(conn, ws, flow["id"], ann, node="wait_buy")
        await add_enrollment(conn, ws, other_flow["id"], ann)
        await add_step(conn, second, flow["id"], 1, "wait_buy", left=False)
    base = f"/api/v1/flows/{flow['id']}/enrollments"

    everyone = (await api.get(base)).json()
    assert [e["id"] for e in everyone["data"]] == [str(third), str(second), str(first)]
    row = everyone["data"][1]
    assert (row["profile_id"], row["status"], row["current_node"], row["version"]) == (
        str(bob),
        "running",
        "wait_buy",
        1,
    )
    assert row["temporal_ui"] == (
        f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/flow-run:{second}"
    )
    assert set(row) >= {"entered_at", "updated_at", "completed_at", "converted_at", "workflow_id"}
    running = (await api.get(base, params={"status": "running"})).json()["data"]
    assert [e["id"] for e in running] == [str(third), str(second)]
    anns = (await api.get(base, params={"profile_id": str(ann)})).json()["data"]
    assert [e["id"] for e in anns] == [str(third), str(first)]
    both = (await api.get(base, params={"profile_id": str(ann), "status": "completed"})).json()["data"]
    assert [e["id"] for e in both] == [str(first)]
    assert (await api.get(base, params={"status": "sleeping"})).status_code == 422
    page1 = (await api.get(base, params={"limit": 2})).json()
    page2 = (await api.get(base, params={"limit": 2, "cursor": page1["next_cursor"]})).json()
    assert [e["id"] for e in page1["data"] + page2["data"]] == [str(third), str(second), str(first)]
    assert page2["next_cursor"] is None

    detail = (await api.get(f"{base}/{second}")).json()
    assert detail["payload"] == {"cart": 7}
    assert [(s["seq"], s["node_id"], s["left_at"]) for s in detail["steps"]] == [(1, "wait_buy", None)]
    assert (await api.get(f"{base}/{uuid.uuid4()}")).status_code == 404
    other = f"/api/v1/flows/{other_flow['id']}/enrollments/{second}"
    assert (await api.get(other)).status_code == 404  # an enrollment is found only under its flow

    ended = await api.post(f"{base}/{first}/exit")
    assert ended.status_code == 409 and "completed" in ended.json()["detail"]
    assert (await api.post(f"{base}/{uuid.uuid4()}/exit")).status_code == 404


async def test_a_draft_that_ran_is_archived_not_deleted(api, engine, workspace):
    draft = (await create(api, "Draft", hold_graph())).json()
    profile = uuid.UUID(await make_profile(api, "ann"))
    async with engine.begin() as conn:
        await add_enrollment(conn, workspace.workspace_id, draft["id"], profile, status="exited")
    r = await api.delete(f"/api/v1/flows/{draft['id']}")
    assert r.status_code == 409 and "has enrollments" in r.json()["detail"]
    assert (await api.post(f"/api/v1/flows/{draft['id']}/archive")).json()["status"] == "archived"


async def test_enrollment_pages_break_ties(api, engine, workspace):
    flow = await active_flow(api)
    profile = uuid.UUID(await make_profile(api, "ann"))
    same = datetime.now(UTC)
    async with engine.begin() as conn:
        ids = [
            await add_enrollment(conn, workspace.workspace_id, flow["id"], profile, status="exited")
            for _ in range(5)
        ]
        await conn.execute(
            text("UPDATE flow_enrollments SET entered_at = :t WHERE flow_id = :f"),
            {"t": same, "f": flow["id"]},
        )
    seen, cursor = [], None
    while True:
        page = (
            await api.get(
                f"/api/v1/flows/{flow['id']}/enrollments",
                params={"limit": 2, **({"cursor": cursor} if cursor else {})},
            )
        ).json()
        seen += [e["id"] for e in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == sorted(map(str, ids), reverse=True)
    bad = await api.get(f"/api/v1/flows/{flow['id']}/enrollments", params={"cursor": "abc"})
    assert bad.status_code == 400


async def test_stats(api, engine, workspace):
    flow = await active_flow(api)
    other_flow = await active_flow(api, "Other")
    ws, fid = workspace.workspace_id, flow["id"]
    people = [uuid.UUID(await make_profile(api, f"p{i}")) for i in range(4)]
    async with engine.begin() as conn:
        # p0 bought in time; p1 got the reminder and converted; p2 waits; p3's send failed.
        e0 = await add_enrollment(conn, ws, fid, people[0], status="converted", converted=True)
        await add_step(conn, e0, fid, 1, "wait_buy", edge="event")
        await add_step(conn, e0, fid, 2, "done")
        e1 = await add_enrollment(conn, ws, fid, people[1], status="completed", converted=True)
        await add_step(conn, e1, fid, 1, "wait_buy", edge="timeout")
        await add_step(conn, e1, fid, 2, "remind", edge="next")
        await add_step(conn, e1, fid, 3, "done")
        e2 = await add_enrollment(conn, ws, fid, people[2], node="wait_buy")
        await add_step(conn, e2, fid, 1, "wait_buy", left=False)
        e3 = await add_enrollment(conn, ws, fid, people[3], status="failed")
        await add_step(conn, e3, fid, 1, "wait_buy", edge="timeout")
        await add_step(conn, e3, fid, 2, "remind", outcome="failed", left=False)
        # An old version's node still counts.
        e4 = await add_enrollment(conn, ws, fid, people[0], status="exited", version=1)
        await add_step(conn, e4, fid, 1, "legacy", edge="next")
        # Another flow's rows do not.
        e5 = await add_enrollment(conn, ws, other_flow["id"], people[0])
        await add_step(conn, e5, other_flow["id"], 1, "wait_buy", left=False)
        now = datetime.now(UTC)
        for i, (flow_id, sent, opened, clicked) in enumerate(
            [
                (fid, True, True, True),
                (fid, True, True, False),
                (fid, True, False, False),
                (fid, False, False, False),
                (other_flow["id"], True, True, True),
            ]
        ):
            await conn.execute(
                text(
                    "INSERT INTO messages (id, workspace_id, idempotency_key, email, flow_id, flow_version, "
                    "flow_node, sent_at, opened_at, clicked_at) "
                    "VALUES (:id, :ws, :key, 'x@example.com', :flow, 1, 'remind', :s, :o, :c)"
                ),
                {
                    "id": uuid7(),
                    "ws": ws,
                    "key": f"stats-{i}",
                    "flow": flow_id,
                    "s": now - timedelta(minutes=5) if sent else None,
                    "o": now if opened else None,
                    "c": now if clicked else None,
                },
            )
    r = await api.get(f"/api/v1/flows/{fid}/stats")
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["enrollments"] == {
        "enrolled": 5,
        "running": 1,
        "completed": 1,
        "exited": 1,
        "failed": 1,
        "converted": 2,
        "conversion_rate": 0.4,
    }
    assert stats["emails"] == {"sent": 3, "opened": 2, "clicked": 1}
    nodes = {n["node_id"]: n for n in stats["nodes"]}
    assert [n["node_id"] for n in stats["nodes"]] == ["wait_buy", "remind", "done", "legacy"]
    wait = nodes["wait_buy"]
    assert (wait["type"], wait["entered"], wait["waiting"], wait["completed"], wait["failed"]) == (
        "wait_for_event", 4, 1, 3, 0
    )  # fmt: skip
    assert wait["edges"] == {"event": 1, "timeout": 2}
    remind = nodes["remind"]
    assert (remind["entered"], remind["waiting"], remind["completed"], remind["failed"]) == (2, 0, 1, 1)
    assert (remind["emails_sent"], remind["emails_opened"], remind["emails_clicked"]) == (3, 2, 1)
    assert remind["edges"] == {"next": 1}
    assert (nodes["done"]["entered"], nodes["done"]["edges"]) == (2, {})
    assert (nodes["legacy"]["type"], nodes["legacy"]["entered"]) == (None, 1)
    # A fresh flow has a zero funnel over its nodes.
    empty = (await api.get(f"/api/v1/flows/{(await active_flow(api, 'Fresh'))['id']}/stats")).json()
    assert empty["enrollments"]["enrolled"] == 0 and empty["enrollments"]["conversion_rate"] == 0.0
    assert [n["entered"] for n in empty["nodes"]] == [0, 0, 0]


async def test_temporal_down(settings, workspace, sessionmaker, engine):
    from api.app import create_app
    from tests.support.servers import free_port, serve

    app = create_app(settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"}))
    async with (
        serve(app) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {workspace.secret_key}"}, timeout=30
        ) as client,
    ):
        flow = await active_flow(client)
        profile = await make_profile(client, "ann")
        segment = await make_segment(client)
        async with engine.begin() as conn:
            running = await add_enrollment(conn, workspace.workspace_id, flow["id"], uuid.UUID(profile))
        base = f"/api/v1/flows/{flow['id']}"
        for path, body in [
            (f"{base}/enroll", {"profile_id": profile}),
            (f"{base}/enroll-segment", {"segment_id": segment}),
        ]:
            r = await client.post(path, json=body)
            assert r.status_code == 503 and r.json()["error"] == "unavailable", (path, r.text)
        # Nothing else needs Temporal; an exit goes through the outbox.
        exited = await client.post(f"{base}/enrollments/{running}/exit")
        assert exited.status_code == 202 and exited.json()["status"] == "exited", exited.text
        assert (await client.get(f"{base}/enrollments")).json()["data"][0]["id"] == str(running)
        assert (await client.get(f"{base}/stats")).status_code == 200
        assert (await client.post(f"{base}/pause")).json()["status"] == "paused"
