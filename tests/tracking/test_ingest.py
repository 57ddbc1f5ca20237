"""Tracking API: calls are stored, identities resolve, retries are idempotent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.support.db import count, events_of, profiles_of


async def test_track_is_committed_before_the_response(tracking, workspace, engine):
    r = await tracking.post(
        "/track", json={"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}}
    )
    assert r.status_code == 200
    assert r.json() == {"success": True, "accepted": 1, "duplicates": 0}
    # No waiting: a 2xx means the row is already visible to another connection.
    events = await events_of(engine, workspace.workspace_id)
    assert [(e["name"], e["properties"], e["external_id"], e["type"]) for e in events] == [
        ("Signed Up", {"plan": "pro"}, "u1", "track")
    ]


async def test_readme_payload_with_email_and_name(tracking, workspace, engine):
    r = await tracking.post(
        "/track",
        json={"email": "Ada@Example.com", "name": "Order Completed", "properties": {"revenue": 42.5}},
    )
    assert r.status_code == 200
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["email"] == "ada@example.com"
    [event] = await events_of(engine, workspace.workspace_id)
    assert event["name"] == "Order Completed" and event["properties"] == {"revenue": 42.5}


async def test_page_is_stored_as_page_viewed(tracking, workspace, engine):
    r = await tracking.post(
        "/page", json={"anonymousId": "anon-1", "name": "Pricing", "properties": {"path": "/pricing"}}
    )
    assert r.status_code == 200
    [event] = await events_of(engine, workspace.workspace_id)
    assert event["name"] == "Page Viewed" and event["type"] == "page"
    assert event["properties"] == {"path": "/pricing", "name": "Pricing"}


async def test_past_timestamp_is_kept_as_event_time(tracking, workspace, engine):
    past = datetime(2024, 3, 5, 10, 30, tzinfo=UTC)
    r = await tracking.post("/track", json={"userId": "u1", "event": "Old", "timestamp": past.isoformat()})
    assert r.status_code == 200
    [event] = await events_of(engine, workspace.workspace_id)
    assert event["occurred_at"] == past
    assert event["received_at"] > past + timedelta(days=365)


async def test_retried_message_id_is_stored_once(tracking, workspace, engine):
    body = {"userId": "u1", "event": "Paid", "messageId": "msg-1", "timestamp": "2026-11-01T00:00:00Z"}
    first = await tracking.post("/track", json=body)
    second = await tracking.post("/track", json=body)
    assert first.json()["accepted"] == 1
    assert second.status_code == 200 and second.json() == {"success": True, "accepted": 0, "duplicates": 1}
    assert len(await events_of(engine, workspace.workspace_id)) == 1


async def test_retried_message_id_without_timestamp_is_stored_once(tracking, workspace, engine):
    body = {"userId": "u1", "event": "Paid", "messageId": "msg-untimed"}
    await tracking.post("/track", json=body)
    await asyncio.sleep(0.01)
    again = await tracking.post("/track", json=body)
    assert again.json()["duplicates"] == 1
    assert len(await events_of(engine, workspace.workspace_id)) == 1


async def test_retried_batch_is_stored_once(tracking, workspace, engine):
    batch = {"batch": [{"userId": f"u{n}", "event": "E", "messageId": f"b-{n}"} for n in range(20)]}
    assert (await tracking.post("/track/batch", json=batch)).json()["accepted"] == 20
    assert (await tracking.post("/track/batch", json=batch)).json() == {
        "success": True,
        "accepted": 0,
        "duplicates": 20,
    }
    assert len(await events_of(engine, workspace.workspace_id)) == 20


async def test_batch_mixes_call_types(tracking, workspace, engine):
    batch = {
        "batch": [
            {"type": "identify", "userId": "u9", "traits": {"plan": "pro", "email": "u9@example.com"}},
            {"type": "track", "userId": "u9", "event": "Upgraded"},
            {"type": "page", "userId": "u9", "name": "Home"},
            {"event": "Defaults To Track", "userId": "u9"},
        ]
    }
    r = await tracking.post("/track/batch", json=batch)
    assert r.status_code == 200 and r.json()["accepted"] == 3
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["traits"] == {"plan": "pro", "email": "u9@example.com"}
    assert profile["email"] == "u9@example.com"
    names = sorted(e["name"] for e in await events_of(engine, workspace.workspace_id))
    assert names == ["Defaults To Track", "Page Viewed", "Upgraded"]


async def test_identify_merges_anonymous_profile_and_moves_events(tracking, workspace, engine):
    await tracking.post("/page", json={"anonymousId": "device-1", "name": "Landing"})
    await tracking.post("/track", json={"anonymousId": "device-1", "event": "Viewed Pricing"})
    # A known user exists already, with history of their own.
    await tracking.post("/track", json={"userId": "user-7", "event": "Logged In"})
    assert len(await profiles_of(engine, workspace.workspace_id)) == 2

    r = await tracking.post(
        "/identify", json={"userId": "user-7", "anonymousId": "device-1", "traits": {"name": "Grace"}}
    )
    assert r.status_code == 200
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["external_id"] == "user-7" and profile["traits"] == {"name": "Grace"}
    events = await events_of(engine, workspace.workspace_id)
    assert {e["profile_id"] for e in events} == {profile["id"]}
    assert sorted(e["name"] for e in events) == ["Logged In", "Page Viewed", "Viewed Pricing"]
    # Later anonymous events of that device land on the known profile.
    await tracking.post("/track", json={"anonymousId": "device-1", "event": "Clicked"})
    assert {e["profile_id"] for e in await events_of(engine, workspace.workspace_id)} == {profile["id"]}


async def test_identify_adopts_anonymous_profile_for_new_user(tracking, workspace, engine):
    await tracking.post("/track", json={"anonymousId": "device-2", "event": "Browsed"})
    [before] = await profiles_of(engine, workspace.workspace_id)
    await tracking.post(
        "/identify", json={"userId": "new-user", "anonymousId": "device-2", "email": "n@example.com"}
    )
    [after] = await profiles_of(engine, workspace.workspace_id)
    assert after["id"] == before["id"]
    assert (after["external_id"], after["email"]) == ("new-user", "n@example.com")


async def test_email_profile_merges_into_user_on_identify(tracking, workspace, engine):
    await tracking.post("/track", json={"email": "sam@example.com", "event": "Newsletter Signup"})
    await tracking.post("/track", json={"userId": "sam", "event": "Logged In"})
    await tracking.post("/identify", json={"userId": "sam", "traits": {"email": "sam@example.com"}})
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert (profile["external_id"], profile["email"]) == ("sam", "sam@example.com")
    assert len(await events_of(engine, workspace.workspace_id)) == 2


async def test_email_of_another_known_user_is_not_stolen(tracking, workspace, engine):
    await tracking.post("/identify", json={"userId": "a", "email": "shared@example.com"})
    await tracking.post("/identify", json={"userId": "b", "email": "shared@example.com"})
    profiles = {p["external_id"]: p for p in await profiles_of(engine, workspace.workspace_id)}
    assert profiles["a"]["email"] == "shared@example.com"
    assert profiles["b"]["email"] is None


async def test_alias_links_previous_anonymous_id(tracking, workspace, engine):
    await tracking.post("/track", json={"anonymousId": "old-anon", "event": "Visited"})
    r = await tracking.post("/alias", json={"previousId": "old-anon", "userId": "user-42"})
    assert r.status_code == 200
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["external_id"] == "user-42"


async def test_alias_renames_a_previous_user_id(tracking, workspace, engine):
    await tracking.post("/track", json={"userId": "legacy-9", "event": "Visited"})
    await tracking.post("/alias", json={"previousId": "legacy-9", "userId": "user-9"})
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["external_id"] == "user-9"
    await tracking.post("/track", json={"userId": "user-9", "event": "Again"})
    assert len(await profiles_of(engine, workspace.workspace_id)) == 1


async def test_concurrent_requests_share_commits(tracking_app, tracking, workspace, engine):
    writer = tracking_app.state.services.writer
    groups_before = writer.groups_committed
    calls = [tracking.post("/track", json={"userId": f"c{n % 10}", "event": "Burst"}) for n in range(200)]
    responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses)
    assert (
        await count(engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=workspace.workspace_id)
        == 200
    )
    groups = writer.groups_committed - groups_before
    assert groups < 200, f"{groups} commits for 200 requests: no grouping"
    # The ten users exist once each, even though their first events raced.
    assert len(await profiles_of(engine, workspace.workspace_id)) == 10


async def test_same_new_user_from_many_requests_makes_one_profile(tracking, workspace, engine):
    calls = [tracking.post("/identify", json={"userId": "racer", "traits": {f"t{n}": n}}) for n in range(30)]
    assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["traits"] == {f"t{n}": n for n in range(30)}


async def test_segment_basic_auth_and_write_key(tracking_app, workspace, engine):
    import base64

    import httpx

    basic = base64.b64encode(f"{workspace.public_key}:".encode()).decode()
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        r1 = await client.post(
            "/track", json={"userId": "u", "event": "A"}, headers={"Authorization": f"Basic {basic}"}
        )
        r2 = await client.post("/track", json={"userId": "u", "event": "B", "writeKey": workspace.public_key})
    assert (r1.status_code, r2.status_code) == (200, 200)
    assert len(await events_of(engine, workspace.workspace_id)) == 2
