"""Campaign sends end to end: the API, `CampaignSendWorkflow` on the
test run's Temporal dev server, the platform worker and fake providers.
Each address gets exactly one message, counted at the providers."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from temporalio.api.enums.v1 import EventType

from definitions import workflow_ids
from definitions.campaigns import PROGRESS_QUERY, CampaignProgress
from delivery.links import KIND_CLICK, KIND_OPEN, KIND_UNSUBSCRIBE, LinkSigner
from tests.campaigns.support import add_people, finished, group_segment, inline_campaign, per_address
from tests.delivery.conftest import add_provider, add_sendgrid, make_template
from tests.flows.support import wait_for


async def _statuses(engine, campaign_id: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT coalesce(m.status, r.status), count(*) FROM campaign_recipients r "
                "LEFT JOIN messages m ON m.id = r.message_id WHERE r.campaign_id = :c GROUP BY 1"
            ),
            {"c": campaign_id},
        )
        return {status: n for status, n in rows}


async def test_thousands_of_recipients_get_one_message_each(
    api, worker, sendgrid, engine, workspace, settings
):
    n = 2500
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, n, "fans")
    await add_people(engine, workspace.workspace_id, 50, "others")
    # Suppressed and address-less people are left out of the snapshot.
    await api.post("/api/v1/suppressions", json={"email": "fans-7@example.com", "reason": "bounce"})
    campaign = await inline_campaign(api, [await group_segment(api, "fans")])
    r = await api.post(f"/api/v1/campaigns/{campaign['id']}/send")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "scheduled"
    done = await finished(api, campaign["id"], timeout=240)

    assert done["status"] == "sent"
    assert done["recipients"] == n - 1
    assert done["sent"] == n - 1
    received = per_address(sendgrid)
    assert received == {f"fans-{i}@example.com": 1 for i in range(n) if i != 7}
    assert await _statuses(engine, campaign["id"]) == {"sent": n - 1}
    # SendGrid's batch interface: a request carries a batch's messages as
    # personalizations, not one request per person.
    assert len(sendgrid.received) <= 2 * (n // 500 + 1)
    assert max(len(body["personalizations"]) for body in sendgrid.received) > 100
    # Each person's message is their own, rendered per person: subject,
    # body, tracking links and unsubscribe header all carry their message.
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email, id FROM messages WHERE campaign_id = :c"), {"c": campaign["id"]}
        )
        ids = {email: message_id for email, message_id in rows}
    signer = LinkSigner(settings.secret_key)
    for message in sendgrid.delivered():
        person = message["to"].split("@")[0].split("-")[1]
        message_id = ids[message["to"]]
        assert message["subject"] == f"Sale for P{person}"
        assert message["custom_args"] == {"mp_message_id": str(message_id)}
        assert f"Hi P{person}, 20% off" in message["html"] and "%mp" not in message["html"]
        assert f"Hi P{person}, 20% off" in message["text"]
        tokens = re.findall(r"/(?:c|o|u)/([A-Za-z0-9_-]+)", message["html"])
        assert len(tokens) == 3  # the sale link, the unsubscribe link, the open pixel
        kinds = (KIND_CLICK, KIND_UNSUBSCRIBE, KIND_OPEN)
        assert [signer.verify(t, k).message_id for t, k in zip(tokens, kinds, strict=True)] == [
            message_id
        ] * 3
        unsubscribe = message["headers"]["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1]
        assert signer.verify(unsubscribe, KIND_UNSUBSCRIBE).message_id == message_id
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    async with engine.connect() as conn:
        marketing, sent_events = (
            await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE marketing), "
                    "(SELECT count(*) FROM events WHERE workspace_id = :w AND name = 'Email Sent') "
                    "FROM messages WHERE campaign_id = :c"
                ),
                {"c": campaign["id"], "w": workspace.workspace_id},
            )
        ).one()
    assert marketing == n - 1  # they count toward the flows' frequency cap
    assert sent_events == n - 1


async def test_primary_failing_half_way_fails_over(api, worker, sendgrid, mixmax, engine, workspace):
    # Six batches, four in flight: the primary takes the first ones, then
    # fails; the batches after go to the secondary.
    n = 3000
    await add_sendgrid(api, sendgrid, priority=10, name="primary")
    # The second fake speaks SendGrid's wire format too.
    await add_sendgrid(api, mixmax, priority=20, name="secondary")
    sendgrid.fail_after = 500  # accepts one batch request, then answers 500
    await add_people(engine, workspace.workspace_id, n, "all")
    campaign = await inline_campaign(api, [await group_segment(api, "all")])
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/send")).status_code == 202
    done = await finished(api, campaign["id"], timeout=240)

    assert done["status"] == "sent" and done["sent"] == n
    received = per_address(sendgrid, mixmax)
    assert received == {f"all-{i}@example.com": 1 for i in range(n)}
    # Whole requests failed over: what the primary accepted stayed there.
    assert 500 <= len(sendgrid.delivered()) < n
    assert len(mixmax.delivered()) == n - len(sendgrid.delivered())
    stats = (await api.get(f"/api/v1/campaigns/{campaign['id']}/stats")).json()
    by_provider = {p["provider"]: p["sent"] for p in stats["providers"]}
    assert by_provider == {"sendgrid": n}  # both are SendGrid-kind providers


async def test_pause_resume_and_cancel(api, worker, sendgrid, engine, workspace, temporal_client):
    n = 3000
    # A provider without a batch interface (one request a message, several
    # in flight), so that pausing and cancelling land between messages.
    # A long timeout: a request slowed by a busy machine must not fail over
    # (a timed-out request may have been taken: the router sends it again).
    await add_provider(
        api,
        "mixmax",
        "mixmax",
        10,
        settings={"base_url": sendgrid.base_url, "timeout": 60},
        credentials={"api_token": sendgrid.token},
    )
    await add_people(engine, workspace.workspace_id, n, "pr")
    sendgrid.mode, sendgrid.delay = "slow", 0.2
    campaign = await inline_campaign(api, [await group_segment(api, "pr")])
    cid = campaign["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    await wait_for(lambda: _received_at_least(sendgrid, 300), timeout=120)
    paused = await api.post(f"/api/v1/campaigns/{cid}/pause")
    assert paused.status_code == 202, paused.text
    assert paused.json()["status"] == "paused"
    assert (await api.patch(f"/api/v1/campaigns/{cid}", json={"name": "renamed"})).status_code == 409
    assert (await api.delete(f"/api/v1/campaigns/{cid}")).status_code == 409

    # Batches in flight finish; then nothing more goes out.
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))
    await wait_for(lambda: _settled(sendgrid), timeout=60, interval=1.0)
    held = sendgrid.accepted
    assert held < n
    await asyncio.sleep(1.5)
    assert sendgrid.accepted == held
    progress = await handle.query(PROGRESS_QUERY, result_type=CampaignProgress)
    assert progress.status == "paused"

    sendgrid.delay = 0.5  # slower, so the cancel comes with most still to send
    assert (await api.post(f"/api/v1/campaigns/{cid}/resume")).json()["status"] == "sending"
    await wait_for(lambda: _received_at_least(sendgrid, held + 200), timeout=120)
    cancelled = await api.post(f"/api/v1/campaigns/{cid}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    done = await finished(api, cid, timeout=120)
    await asyncio.sleep(1.0)
    total_sent = sendgrid.accepted

    assert done["status"] == "cancelled"
    assert held + 200 <= total_sent < n
    received = per_address(sendgrid)
    twice = [a for a, v in received.items() if v > 1]
    assert not twice, await _attempts(engine, twice)
    statuses = await _statuses(engine, cid)
    assert statuses.get("sent", 0) == total_sent
    assert statuses.get("cancelled", 0) == n - total_sent
    assert done["cancelled"] == n - total_sent
    assert (await api.post(f"/api/v1/campaigns/{cid}/resume")).status_code == 409


async def _attempts(engine, emails: list[str]) -> list:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email, status, attempts FROM messages WHERE email = ANY(:e)"), {"e": emails}
        )
        return [tuple(r) for r in rows][:5]


async def _received_at_least(fake, n: int) -> bool:
    return fake.accepted >= n


async def _settled(fake) -> bool:
    before = fake.accepted
    await asyncio.sleep(1.0)
    return fake.accepted == before


async def test_scheduled_campaign_cancelled_before_its_time(
    api, worker, sendgrid, engine, workspace, temporal_client
):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 5, "later")
    campaign = await inline_campaign(api, [await group_segment(api, "later")])
    cid = campaign["id"]
    at = datetime.now(UTC) + timedelta(hours=1)
    r = await api.post(f"/api/v1/campaigns/{cid}/schedule", json={"scheduled_at": at.isoformat()})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "scheduled"
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))
    described = await handle.describe()
    assert described.typed_search_attributes is not None
    # Still editable while it waits.
    assert (
        await api.patch(f"/api/v1/campaigns/{cid}", json={"data": {"offer": "30% off"}})
    ).status_code == 200
    assert (await api.post(f"/api/v1/campaigns/{cid}/cancel")).json()["status"] == "cancelled"
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result["status"] == "cancelled"
    assert (await api.get(f"/api/v1/campaigns/{cid}")).json()["status"] == "cancelled"
    assert sendgrid.received == []
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 409


async def test_schedule_in_the_near_future_sends_then(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 3, "soon")
    template = await make_template(api, name="Soon")
    body = {
        "name": "Soon",
        "content": {"template_id": template["id"], "subject": "Override for {{ profile.first_name }}"},
        "audience": {"segment_ids": [await group_segment(api, "soon")]},
        "data": {"code": "X1"},
    }
    campaign = (await api.post("/api/v1/campaigns", json=body)).json()
    at = datetime.now(UTC) + timedelta(seconds=3)
    r = await api.post(f"/api/v1/campaigns/{campaign['id']}/schedule", json={"scheduled_at": at.isoformat()})
    assert r.status_code == 202
    done = await finished(api, campaign["id"], timeout=60)
    assert done["status"] == "sent" and done["sent"] == 3
    assert datetime.fromisoformat(done["started_at"]) >= at - timedelta(seconds=1)
    delivered = sendgrid.delivered()
    assert sorted(m["subject"] for m in delivered) == [
        "Override for P0",
        "Override for P1",
        "Override for P2",
    ]
    assert all("code X1" in m["html"] for m in delivered)


async def test_empty_audience_ends_with_a_clear_status(api, worker, sendgrid, workspace):
    await add_sendgrid(api, sendgrid)
    campaign = await inline_campaign(api, [await group_segment(api, "nobody")])
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/send")).status_code == 202
    done = await finished(api, campaign["id"], timeout=60)
    assert done["status"] == "sent"
    assert done["recipients"] == 0
    assert "empty audience" in done["detail"]
    assert sendgrid.received == []


async def test_excluded_segments_and_one_message_per_address(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 10, "a")
    a = await group_segment(api, "a")
    # Overlapping includes: one message per address all the same.
    first_five = {
        "name": "first five",
        "definition": {
            "type": "trait",
            "path": "first_name",
            "op": "in",
            "value": [f"P{i}" for i in range(5)],
        },
    }
    five = (await api.post("/api/v1/segments", json=first_five)).json()["id"]
    two = {
        "name": "two",
        "definition": {"type": "trait", "path": "first_name", "op": "in", "value": ["P0", "P1"]},
    }
    excluded = (await api.post("/api/v1/segments", json=two)).json()["id"]
    campaign = await inline_campaign(
        api, [a, five], audience={"segment_ids": [a, five], "exclude_segment_ids": [excluded]}
    )
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/send")).status_code == 202
    done = await finished(api, campaign["id"], timeout=60)
    assert done["sent"] == 8
    assert per_address(sendgrid) == {f"a-{i}@example.com": 1 for i in range(2, 10)}


async def test_throttle_holds_back_the_rest(api, worker, sendgrid, engine, workspace, temporal_client):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 3, "warm")
    # 60 an hour: one recipient, then a minute's timer before the next.
    campaign = await inline_campaign(api, [await group_segment(api, "warm")], throttle_per_hour=60)
    cid = campaign["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    await wait_for(lambda: _received_at_least(sendgrid, 1), timeout=60)
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))

    async def timer_started():
        history = await handle.fetch_history()
        return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)

    await wait_for(timer_started, timeout=30)
    await asyncio.sleep(2.0)
    assert sendgrid.accepted == 1  # the others wait for their share of the hour
    assert (await api.post(f"/api/v1/campaigns/{cid}/cancel")).status_code == 202
    done = await finished(api, cid, timeout=60)
    assert done["status"] == "cancelled" and done["sent"] == 1 and done["cancelled"] == 2
    assert sendgrid.accepted == 1


async def test_local_time_schedule_sends_each_zone_at_its_time(
    api, worker, sendgrid, engine, workspace, temporal_client
):
    await add_sendgrid(api, sendgrid)
    zones = {"tokyo": "Asia/Tokyo", "utc": "UTC", "la": "America/Los_Angeles", "bad": "Not/A_Zone"}
    for group, zone in zones.items():
        await add_people(engine, workspace.workspace_id, 2, group)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE profiles SET traits = traits || jsonb_build_object('timezone', CAST(:z AS text), "
                    "'zone_group', 'z') WHERE workspace_id = :w AND traits->>'group' = :g"
                ),
                {"z": zone, "w": workspace.workspace_id, "g": group},
            )
    segment = (
        await api.post(
            "/api/v1/segments",
            json={
                "name": "zoned",
                "definition": {"type": "trait", "path": "zone_group", "op": "eq", "value": "z"},
            },
        )
    ).json()["id"]
    campaign = await inline_campaign(api, [segment])
    cid = campaign["id"]
    # 30 minutes from now on a UTC wall clock: already past in Tokyo (UTC+9),
    # still ahead in UTC, in Los Angeles, and for an unknown zone (UTC).
    wall = (datetime.now(UTC) + timedelta(minutes=30)).replace(tzinfo=None, microsecond=0)
    r = await api.post(
        f"/api/v1/campaigns/{cid}/schedule", json={"scheduled_at": wall.isoformat(), "local_time": True}
    )
    assert r.status_code == 202, r.text
    assert r.json()["local_time"] is True
    await wait_for(lambda: _received_at_least(sendgrid, 2), timeout=60)
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))

    async def waiting_for_next_zone():
        history = await handle.fetch_history()
        return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)

    await wait_for(waiting_for_next_zone, timeout=30)
    await asyncio.sleep(1.0)
    assert sorted(per_address(sendgrid)) == ["tokyo-0@example.com", "tokyo-1@example.com"]
    recipients = (await api.get(f"/api/v1/campaigns/{cid}/recipients")).json()["data"]
    order = [p["email"].split("-")[0] for p in recipients]
    assert order[:2] == ["tokyo", "tokyo"] and set(order[2:6]) == {"utc", "bad"} and order[6:] == ["la", "la"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/cancel")).status_code == 202
    done = await finished(api, cid, timeout=60)
    assert done["sent"] == 2 and done["cancelled"] == 6
    # A wall-clock time that has passed everywhere is refused.
    other = await inline_campaign(api, [segment], name="too late")
    late = (datetime.now(UTC) - timedelta(hours=13)).replace(tzinfo=None).isoformat()
    r = await api.post(
        f"/api/v1/campaigns/{other['id']}/schedule", json={"scheduled_at": late, "local_time": True}
    )
    assert r.status_code == 422


async def test_people_who_left_the_topic_are_left_out(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    assert (
        await api.post("/api/v1/topics", json={"key": "newsletter", "name": "Newsletter"})
    ).status_code == 201
    await add_people(engine, workspace.workspace_id, 4, "news")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO topic_optouts (workspace_id, profile_id, topic_key) "
                "SELECT workspace_id, id, 'newsletter' FROM profiles WHERE workspace_id = :w AND email = :e"
            ),
            {"w": workspace.workspace_id, "e": "news-1@example.com"},
        )
    campaign = await inline_campaign(api, [await group_segment(api, "news")], topic="newsletter")
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/send")).status_code == 202
    done = await finished(api, campaign["id"], timeout=60)
    assert done["recipients"] == 3 and done["sent"] == 3
    assert sorted(per_address(sendgrid)) == [f"news-{i}@example.com" for i in (0, 2, 3)]
    async with engine.connect() as conn:
        topics = (
            await conn.execute(
                text("SELECT DISTINCT topic FROM messages WHERE campaign_id = :c"), {"c": campaign["id"]}
            )
        ).all()
    assert topics == [("newsletter",)]
