"""Flow runs end to end through the tracking API, the outbox and Temporal."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.delivery.conftest import add_sendgrid, make_template
from tests.flows.support import active_flow, enrollments, wait_for


def _cart_flow(template_id: str, timeout: int = 3) -> dict:
    return {
        "trigger": {"type": "event", "name": "Cart Updated", "enrollment_key": "properties.cart_id"},
        "start": "wait_buy",
        "nodes": [
            {"id": "wait_buy", "type": "wait_for_event", "name": "Order Completed", "match_key": True,
             "timeout_seconds": timeout, "on_event": "bought", "on_timeout": "remind"},
            {"id": "remind", "type": "send_email", "template_id": template_id, "next": "grace",
             "overrides": {"subject": "Still thinking about cart {{ data.trigger.cart_id }}?",
                           "from_name": "Cart Team"}},
            {"id": "grace", "type": "wait", "seconds": 4, "next": "done"},
            {"id": "done", "type": "exit"},
            {"id": "bought", "type": "exit"},
        ],
        "settings": {"reentry": "always", "goal": {"name": "Order Completed"}},
    }  # fmt: skip


async def _at_step(client, flow_id, node: str, n: int):
    # The Temporal UI's query for "everyone at node X of flow Y".
    query = f"FlowId = '{flow_id}' AND FlowStep = '{node}' AND ExecutionStatus = 'Running'"
    return (await client.count_workflows(query)).count == n


async def test_abandoned_cart(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace, temporal_client
):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, _cart_flow(template["id"]))
    who = {"userId": "shopper", "traits": {"email": "shopper@example.com"}}
    assert (await tracking.post("/identify", json=who)).status_code == 200

    # Two carts: two independent enrollments.
    for cart in ("c1", "c2"):
        body = {"userId": "shopper", "event": "Cart Updated", "properties": {"cart_id": cart}}
        assert (await tracking.post("/track", json=body)).status_code == 200
    rows = await wait_for(lambda: _at_least(engine, flow_id, 2))
    assert sorted(r["enrollment_key"] for r in rows) == ["c1", "c2"]
    assert len({r["workflow_id"] for r in rows}) == 2
    # Both runs show their first node in the Temporal UI (set when the run started).
    await wait_for(lambda: _at_step(temporal_client, flow_id, "wait_buy", 2))

    # Buying cart c1 within the window: it converts, nothing is sent for it.
    buy = {"userId": "shopper", "event": "Order Completed", "properties": {"cart_id": "c1"}}
    assert (await tracking.post("/track", json=buy)).status_code == 200

    async def c2_mailed():
        return len(sendgrid.received) >= 1

    await wait_for(c2_mailed, timeout=30)
    await wait_for(lambda: _at_step(temporal_client, flow_id, "grace", 1))  # upserted by the run
    # c2 was not bought: exactly one email, then a purchase during the grace wait converts it.
    buy_c2 = {"userId": "shopper", "event": "Order Completed", "properties": {"cart_id": "c2"}}
    assert (await tracking.post("/track", json=buy_c2)).status_code == 200

    async def both_done():
        rows = await enrollments(engine, flow_id)
        return rows if all(r["status"] != "running" for r in rows) else None

    rows = {r["enrollment_key"]: r for r in await wait_for(both_done, timeout=30)}
    assert rows["c1"]["status"] == "converted" and rows["c1"]["converted_at"] is not None
    assert rows["c2"]["status"] == "converted"
    assert len(sendgrid.received) == 1
    # The node's overrides change the template's subject (rendered) and sender name.
    assert sendgrid.received[0]["subject"] == "Still thinking about cart c2?"
    assert sendgrid.received[0]["from"]["name"] == "Cart Team"
    async with engine.connect() as conn:
        linked = (
            await conn.execute(
                text("SELECT flow_node, enrollment_id, status FROM messages WHERE flow_id = :f"),
                {"f": flow_id},
            )
        ).all()
        steps = (
            await conn.execute(
                text("SELECT node_id, edge FROM flow_steps WHERE enrollment_id = :e ORDER BY seq"),
                {"e": rows["c2"]["id"]},
            )
        ).all()
    assert [(n, e) for n, e, _ in linked] == [("remind", rows["c2"]["id"])]
    assert [tuple(s) for s in steps] == [("wait_buy", "timeout"), ("remind", "next"), ("grace", None)]


async def _at_least(engine, flow_id, n: int):
    rows = await enrollments(engine, flow_id)
    return rows if len(rows) >= n else None


async def test_cart_bought_in_time_sends_nothing(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, _cart_flow(template["id"], timeout=5))
    await tracking.post("/identify", json={"userId": "quick", "traits": {"email": "quick@example.com"}})
    await tracking.post(
        "/track", json={"userId": "quick", "event": "Cart Updated", "properties": {"cart_id": 9}}
    )
    await wait_for(lambda: _at_least(engine, flow_id, 1))
    await tracking.post(
        "/track", json={"userId": "quick", "event": "Order Completed", "properties": {"cart_id": 9}}
    )

    async def done():
        rows = await enrollments(engine, flow_id)
        return rows if rows[0]["status"] != "running" else None

    [row] = await wait_for(done)
    assert row["status"] == "converted" and row["enrollment_key"] == "9"
    await asyncio.sleep(1)
    assert sendgrid.received == []
