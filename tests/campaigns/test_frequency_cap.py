"""The workspace's frequency cap over campaigns and flows: campaign sends
count toward it, a campaign leaves out people at the cap (recorded
`capped`, visible in recipients and stats) unless it opts out, and a flow
without a cap of its own is held to the workspace's."""

from __future__ import annotations

from sqlalchemy import text

from tests.campaigns.support import (
    add_people,
    assert_counted,
    finished,
    group_segment,
    inline_campaign,
    per_address,
)
from tests.delivery.conftest import add_sendgrid, make_template
from tests.flows.support import active_flow, enrollments, wait_for

CAP = {"max_emails": 1, "period_seconds": 86400}


async def _set_cap(api, cap: dict | None) -> None:
    r = await api.put("/api/v1/workspace/settings", json={"frequency_cap": cap})
    assert r.status_code == 200, r.text
    assert r.json()["frequency_cap"] == cap


async def _send(api, segment: str, name: str, **extra) -> dict:
    campaign = await inline_campaign(api, [segment], name=name, **extra)
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/send")).status_code == 202
    return await finished(api, campaign["id"], timeout=60)


async def test_campaign_sends_count_and_capped_people_are_left_out(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 3, "cx")
    await add_people(engine, workspace.workspace_id, 3, "cy")
    x = await group_segment(api, "cx")
    both = (
        await api.post(
            "/api/v1/segments",
            json={
                "name": "x and y",
                "definition": {"type": "trait", "path": "group", "op": "in", "value": ["cx", "cy"]},
            },
        )
    ).json()["id"]
    bad = await api.put("/api/v1/workspace/settings", json={"frequency_cap": {"max_emails": 0}})
    assert bad.status_code == 422
    await _set_cap(api, CAP)

    first = await _send(api, x, "first")
    assert first["sent"] == 3 and first["capped"] == 0
    # x's people had their one marketing email today (the first campaign's).
    second = await _send(api, both, "second")
    assert second["status"] == "sent" and second["recipients"] == 6
    assert second["sent"] == 3 and second["capped"] == 3
    stats = (await api.get(f"/api/v1/campaigns/{second['id']}/stats")).json()
    assert stats["capped"] == 3 and stats["sent"] == 3 and stats["pending"] == 0
    assert (await assert_counted(engine, second["id"]))["capped"] == 3
    people = (await api.get(f"/api/v1/campaigns/{second['id']}/recipients")).json()["data"]
    assert {p["email"]: p["status"] for p in people} == {
        **{f"cx-{i}@example.com": "capped" for i in range(3)},
        **{f"cy-{i}@example.com": "sent" for i in range(3)},
    }
    async with engine.connect() as conn:
        made = await conn.scalar(
            text("SELECT count(*) FROM messages WHERE campaign_id = :c"), {"c": second["id"]}
        )
    assert made == 3  # a capped person gets no message row

    # A campaign that opts out of the cap (a service announcement) reaches everyone.
    third = await _send(api, both, "third", respect_frequency_cap=False)
    assert third["sent"] == 6 and third["capped"] == 0 and third["respect_frequency_cap"] is False
    assert per_address(sendgrid) == {
        **{f"cx-{i}@example.com": 2 for i in range(3)},
        **{f"cy-{i}@example.com": 2 for i in range(3)},
    }

    # Without a workspace cap nobody is capped.
    await _set_cap(api, None)
    fourth = await _send(api, both, "fourth")
    assert fourth["sent"] == 6 and fourth["capped"] == 0


async def test_a_flow_without_its_own_cap_is_held_to_the_workspace_cap(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    await _set_cap(api, CAP)
    body = {"userId": "fc", "traits": {"email": "fc@example.com", "group": "fcg"}}
    assert (await tracking.post("/identify", json=body)).status_code == 200
    done = await _send(api, await group_segment(api, "fcg"), "to fc")
    assert done["sent"] == 1
    template = await make_template(api)
    flow_id = await active_flow(
        sessionmaker,
        workspace.workspace_id,
        {
            "trigger": {"type": "event", "name": "Browsed"},
            "start": "mail",
            "nodes": [{"id": "mail", "type": "send_email", "template_id": template["id"]}],
        },
    )
    r = await tracking.post("/track", json={"userId": "fc", "event": "Browsed"})
    assert r.status_code == 200

    async def ended():
        rows = await enrollments(engine, flow_id)
        return rows if rows and rows[0]["status"] != "running" else None

    await wait_for(ended, timeout=30)
    async with engine.connect() as conn:
        outcome = await conn.scalar(text("SELECT outcome FROM flow_steps WHERE flow_id = :f"), {"f": flow_id})
    assert outcome == "capped"
    assert per_address(sendgrid) == {"fc@example.com": 1}  # the campaign's only
