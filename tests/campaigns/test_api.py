"""The campaigns API: validation, the status machine, isolation, test
sends, stats after opens and clicks through the tracking endpoints, and
the recipients list."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from tests.campaigns.support import HTML, add_people, finished, group_segment, inline_campaign
from tests.conftest import new_workspace
from tests.delivery.conftest import SENDER, add_sendgrid, make_template
from tests.flows.support import wait_for


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def test_crud_and_validation(api, workspace):
    segment = await group_segment(api, "crud")
    template = await make_template(api, name="T")
    campaign = await inline_campaign(api, [segment])
    assert campaign["status"] == "draft"
    assert campaign["workflow_id"] == f"campaign:{campaign['id']}"
    assert campaign["temporal_ui"].endswith(f"/workflows/campaign:{campaign['id']}")

    missing = "01a21780-0000-7000-8000-000000000000"
    bad = [
        ({"content": {"template_id": missing}}, "body.content.template_id"),
        ({"audience": {"segment_ids": [missing]}}, "body.audience.segment_ids.0"),
        (
            {"audience": {"segment_ids": [segment], "exclude_segment_ids": [missing]}},
            "body.audience.exclude_segment_ids.0",
        ),
    ]
    for change, loc in bad:
        body = {
            "name": f"bad {loc}",
            "content": {"subject": "s", "html": HTML, "from_email": SENDER},
            "audience": {"segment_ids": [segment]},
        } | change
        r = await api.post("/api/v1/campaigns", json=body)
        assert r.status_code == 422, (change, r.text)
        assert loc in r.text
    invalid = [
        {"content": {"html": HTML, "from_email": SENDER}},  # no subject
        {"content": {"template_id": template["id"], "html": HTML}},  # both sources
        {"audience": {"segment_ids": []}},
        {"audience": {"segment_ids": [segment], "exclude_segment_ids": [segment]}},
        {"content": {"subject": "{% if %}", "html": HTML, "from_email": SENDER}},  # does not compile
        {"topic": "Not A Key!"},
        {"throttle_per_hour": 10**12},
        {"name": "x" * 500},
        {"unknown": 1},
    ]
    for change in invalid:
        body = {
            "name": "invalid",
            "content": {"subject": "s", "html": HTML, "from_email": SENDER},
            "audience": {"segment_ids": [segment]},
        } | change
        assert (await api.post("/api/v1/campaigns", json=body)).status_code == 422, change
    # Name taken.
    dup = {"name": campaign["name"], "content": campaign["content"], "audience": campaign["audience"]}
    assert (await api.post("/api/v1/campaigns", json=dup)).status_code == 409

    missing_topic = await api.patch(f"/api/v1/campaigns/{campaign['id']}", json={"topic": "news"})
    assert missing_topic.status_code == 422 and "no topic" in missing_topic.text
    assert (await api.post("/api/v1/topics", json={"key": "news", "name": "News"})).status_code == 201
    patched = await api.patch(
        f"/api/v1/campaigns/{campaign['id']}",
        json={
            "content": {"template_id": template["id"], "subject": "Hey {{ profile.first_name }}"},
            "topic": "news",
        },
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["content"]["template_id"] == template["id"] and patched.json()["topic"] == "news"
    assert (await api.patch(f"/api/v1/campaigns/{campaign['id']}", json={"name": None})).status_code == 422

    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = await api.post(f"/api/v1/campaigns/{campaign['id']}/schedule", json={"scheduled_at": past})
    assert r.status_code == 422
    for when in ("not a date", "99999-01-01T00:00:00Z", None):
        r = await api.post(f"/api/v1/campaigns/{campaign['id']}/schedule", json={"scheduled_at": when})
        assert r.status_code == 422, when
    # Nothing to pause or resume in a draft.
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/pause")).status_code == 409
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/resume")).status_code == 409
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/cancel")).status_code == 409

    page = (await api.get("/api/v1/campaigns", params={"limit": 1})).json()
    assert len(page["data"]) == 1
    assert (await api.get("/api/v1/campaigns/not-a-uuid")).status_code == 422
    assert (
        await api.get(f"/api/v1/campaigns/{campaign['id']}/recipients", params={"cursor": "x"})
    ).status_code == 400
    assert (await api.delete(f"/api/v1/campaigns/{campaign['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).status_code == 404


async def test_a_missing_segment_at_send_time_fails_the_campaign_clearly(api, worker, sendgrid, workspace):
    await add_sendgrid(api, sendgrid)
    segment = await group_segment(api, "gone")
    campaign = await inline_campaign(api, [segment])
    assert (await api.delete(f"/api/v1/segments/{segment}")).status_code == 204
    r = await api.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert r.status_code == 422 and "no segment" in r.text
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()["status"] == "draft"


async def test_another_workspace_sees_and_changes_nothing(api, api_app, sessionmaker, worker, workspace):
    campaign = await inline_campaign(api, [await group_segment(api, "mine")])
    cid = campaign["id"]
    other = await new_workspace(sessionmaker)
    headers = {"Authorization": f"Bearer {other.secret_key}"}
    async with httpx.AsyncClient(base_url=api_app.state.base_url, headers=headers, timeout=30) as intruder:
        assert (await intruder.get("/api/v1/campaigns")).json()["data"] == []
        assert (await intruder.get(f"/api/v1/campaigns/{cid}")).status_code == 404
        assert (await intruder.patch(f"/api/v1/campaigns/{cid}", json={"name": "x"})).status_code == 404
        for action in ("send", "pause", "resume", "cancel", "stats", "recipients"):
            method = intruder.get if action in ("stats", "recipients") else intruder.post
            assert (await method(f"/api/v1/campaigns/{cid}/{action}")).status_code == 404, action
        r = await intruder.post(f"/api/v1/campaigns/{cid}/test", json={"emails": ["a@example.com"]})
        assert r.status_code == 404
        at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (
            await intruder.post(f"/api/v1/campaigns/{cid}/schedule", json={"scheduled_at": at})
        ).status_code == 404
        assert (await intruder.delete(f"/api/v1/campaigns/{cid}")).status_code == 404
        # Nor can it point a campaign of its own at our segments.
        body = {
            "name": "theirs",
            "content": {"subject": "s", "html": HTML, "from_email": SENDER},
            "audience": {"segment_ids": campaign["audience"]["segment_ids"]},
        }
        assert (await intruder.post("/api/v1/campaigns", json=body)).status_code == 422
    assert (await api.get(f"/api/v1/campaigns/{cid}")).json()["status"] == "draft"


async def test_test_send_is_not_counted(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 2, "t")
    campaign = await inline_campaign(api, [await group_segment(api, "t")])
    r = await api.post(f"/api/v1/campaigns/{campaign['id']}/test", json={"emails": ["qa@example.com"]})
    assert r.status_code == 202, r.text
    [made] = r.json()["messages"]

    async def sent():
        m = (await api.get(f"/api/v1/messages/{made['message_id']}")).json()
        return m if m["status"] == "sent" else None

    await wait_for(sent, timeout=30)
    [message] = sendgrid.delivered()
    assert message["to"] == "qa@example.com"
    assert message["subject"] == "Sale for"  # no profile: the variable renders empty
    stats = (await api.get(f"/api/v1/campaigns/{campaign['id']}/stats")).json()
    assert stats["sent"] == 0 and stats["recipients"] == 0
    too_many = {"emails": [f"q{i}@example.com" for i in range(6)]}
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/test", json=too_many)).status_code == 422


async def test_stats_and_recipients_after_opens_and_clicks(
    api, tracking_app, worker, sendgrid, engine, workspace
):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 6, "s")
    campaign = await inline_campaign(api, [await group_segment(api, "s")])
    cid = campaign["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    done = await finished(api, cid, timeout=60)
    assert done["sent"] == 6

    def html_of(address: str) -> str:
        return next(m["html"] for m in sendgrid.delivered() if m["to"] == address)

    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        for address, opens, clicks in (("s-0@example.com", 2, 1), ("s-1@example.com", 1, 2)):
            html = html_of(address)
            pixel = re.search(r'src="([^"]+/o/[^"]+\.gif)"', html).group(1)
            click = re.search(r"href=['\"]([^'\"]+/c/[^'\"]+)['\"]", html).group(1)
            for _ in range(opens):
                assert (await client.get(_path(pixel))).status_code == 200
            for _ in range(clicks):
                assert (await client.get(_path(click))).status_code == 302
        header = next(m for m in sendgrid.delivered() if m["to"] == "s-2@example.com")["headers"][
            "List-Unsubscribe"
        ].strip("<>")
        r = await client.post(_path(header), content=b"List-Unsubscribe=One-Click")
        assert r.status_code == 200

    stats = (await api.get(f"/api/v1/campaigns/{cid}/stats")).json()
    assert stats["recipients"] == 6 and stats["sent"] == 6 and stats["pending"] == 0
    assert stats["unique_opens"] == 2 and stats["total_opens"] == 3
    assert stats["unique_clicks"] == 2 and stats["total_clicks"] == 3
    assert stats["unsubscribed"] == 1
    assert stats["rates"]["open"] == round(2 / 6, 4) and stats["rates"]["click"] == round(2 / 6, 4)
    assert stats["providers"] == [
        {"provider": "sendgrid", "sent": 6, "delivered": 0, "bounced": 0, "opened": 2, "clicked": 2}
    ]
    assert sum(h["sent"] for h in stats["hourly"]) == 6
    assert sum(h["opened"] for h in stats["hourly"]) == 3
    assert sum(h["clicked"] for h in stats["hourly"]) == 3

    first = (await api.get(f"/api/v1/campaigns/{cid}/recipients", params={"limit": 4})).json()
    rest = (
        await api.get(f"/api/v1/campaigns/{cid}/recipients", params={"cursor": first["next_cursor"]})
    ).json()
    people = first["data"] + rest["data"]
    assert [p["seq"] for p in people] == [1, 2, 3, 4, 5, 6]
    assert rest["next_cursor"] is None
    assert all(
        p["status"] == "sent" and p["provider"] == "sendgrid" and p["provider_message_id"] for p in people
    )
    by_email = {p["email"]: p for p in people}
    assert by_email["s-0@example.com"]["opened"] and by_email["s-1@example.com"]["clicked"]
    assert not by_email["s-3@example.com"]["opened"]
