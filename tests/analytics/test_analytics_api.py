"""The analytics API answers from rollups kept by the rollup pass: counts
match what was tracked, passes never count twice, breakdowns, email
engagement through a real send and tracking pixel, funnels, isolation and
bad parameters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from analytics.rollups import rollup_pass
from tests.campaigns.support import add_people, finished, group_segment, inline_campaign
from tests.conftest import new_workspace
from tests.delivery.conftest import add_sendgrid, make_template, send

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


async def roll(engine) -> None:
    await rollup_pass(engine, lag_seconds=0, slice_hours=6)


async def track(tracking, calls: list[dict]) -> None:
    r = await tracking.post("/track/batch", json={"batch": calls})
    assert r.status_code == 200, r.text


async def test_event_series_counts_each_event_once(api, tracking, engine):
    await track(
        tracking,
        [
            {"userId": "a", "event": "Viewed", "timestamp": at(2), "properties": {"plan": "pro"}},
            {"userId": "b", "event": "Viewed", "timestamp": at(2), "properties": {"plan": "free"}},
            {"userId": "a", "event": "Viewed", "timestamp": at(1), "properties": {"plan": "pro"}},
            {"userId": "a", "event": "Bought", "timestamp": at(1)},
        ],
    )
    await roll(engine)
    await roll(engine)  # a second pass with nothing new adds nothing
    params = {"name": "Viewed", "interval": "hour", "from": at(5), "to": at(0)}
    body = (await api.get("/api/v1/analytics/events", params=params)).json()
    counts = {p["at"][:13]: p["count"] for p in body["total"]["points"] if p["count"]}
    assert counts == {at(2)[:13]: 2, at(1)[:13]: 1}
    assert body["total"]["total"] == 3

    await track(
        tracking, [{"userId": "c", "event": "Viewed", "timestamp": at(1), "properties": {"plan": "pro"}}]
    )
    await roll(engine)
    broken = (await api.get("/api/v1/analytics/events", params={**params, "breakdown": "plan"})).json()
    by_value = {s["label"]: s["total"] for s in broken["breakdown"]}
    assert by_value == {"pro": 3, "free": 1}
    # Day series read the daily rollups: the same totals.
    daily = (await api.get("/api/v1/analytics/events", params={"name": "Viewed", "breakdown": "plan"})).json()
    assert {s["label"]: s["total"] for s in daily["breakdown"]} == {"pro": 3, "free": 1}
    names = (await api.get("/api/v1/analytics/events/names", params={"name": "Viewed"})).json()
    assert {n["name"]: n["count"] for n in names["data"]} == {"Viewed": 4, "Bought": 1}
    assert names["properties"] == ["plan"]


async def test_day_series_and_profiles(api, tracking, engine):
    await track(
        tracking, [{"userId": f"p{n}", "event": "Opened App", "timestamp": at(0.1)} for n in range(3)]
    )
    await track(tracking, [{"userId": "p0", "event": "Opened App", "timestamp": at(0.05)}])
    await roll(engine)
    body = (await api.get("/api/v1/analytics/events", params={"interval": "day"})).json()
    assert body["total"]["total"] == 4 and len(body["total"]["points"]) >= 30
    people = (await api.get("/api/v1/analytics/profiles", params={"interval": "day"})).json()
    assert people["new_profiles"]["total"] == 3
    today = NOW.date().isoformat()
    active = {p["at"][:10]: p["count"] for p in people["active_profiles"]["points"]}
    assert active[today] == 3  # p0 twice today counts once
    overview = (await api.get("/api/v1/analytics/overview")).json()
    assert (
        overview["events"] == 4 and overview["new_profiles"] == 3 and overview["active_profiles_today"] == 3
    )


async def test_funnel_orders_steps_within_the_window(api, tracking, engine):
    await track(
        tracking,
        [
            {"userId": "f1", "event": "View", "timestamp": at(5)},
            {"userId": "f1", "event": "Cart", "timestamp": at(4)},
            {"userId": "f1", "event": "Order", "timestamp": at(3)},
            {"userId": "f2", "event": "View", "timestamp": at(5)},
            {"userId": "f2", "event": "Cart", "timestamp": at(4.5)},
            {"userId": "f3", "event": "Cart", "timestamp": at(6)},  # cart before view: not a step 2
            {"userId": "f3", "event": "View", "timestamp": at(5)},
            {"userId": "f4", "event": "View", "timestamp": at(30)},
            {"userId": "f4", "event": "Cart", "timestamp": at(2)},  # outside a 24 h window
        ],
    )
    params = [("steps", "View"), ("steps", "Cart"), ("steps", "Order"), ("window_hours", "24")]
    body = (await api.get("/api/v1/analytics/funnel", params=params)).json()
    assert [s["count"] for s in body["steps"]] == [0, 0, 0]  # not rolled up yet
    await roll(engine)
    body = (await api.get("/api/v1/analytics/funnel", params=params)).json()
    assert [(s["name"], s["count"]) for s in body["steps"]] == [("View", 4), ("Cart", 2), ("Order", 1)]
    assert body["as_of"] is not None
    assert body["steps"][1]["conversion_from_previous"] == 0.5
    assert body["steps"][2]["conversion_from_first"] == 0.25


async def test_email_engagement_from_a_real_send_and_open(
    api,
    tracking_app,
    worker,
    sendgrid,
    engine,
    workspace,
    settings,
):
    provider = await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    message = await send(api, template["id"], "reader@example.com")
    assert message["status"] == "sent", message
    html = sendgrid.received[-1]["content"][-1]["value"]
    pixel = re.search(r'src="[^"]+(/o/[^"]+\.gif)"', html).group(1)
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        assert (await client.get(pixel)).status_code == 200
    await roll(engine)
    body = (await api.get("/api/v1/analytics/email", params={"interval": "hour", "from": at(2)})).json()
    assert body["totals"]["Sent"] == 1 and body["totals"]["Opened"] == 1
    daily = (await api.get("/api/v1/analytics/email", params={"interval": "day"})).json()
    assert daily["totals"]["Sent"] == 1 and daily["totals"]["Opened"] == 1
    by_provider = (
        await api.get(
            "/api/v1/analytics/email",
            params={"provider": provider["kind"], "from": at(2), "interval": "hour"},
        )
    ).json()
    assert by_provider["totals"]["Sent"] == 1
    other = (
        await api.get(
            "/api/v1/analytics/email", params={"provider": "ses", "from": at(2), "interval": "hour"}
        )
    ).json()
    assert other["totals"]["Sent"] == 0


async def test_another_workspace_sees_none_of_it(api_app, tracking, engine, sessionmaker):
    await track(tracking, [{"userId": "x", "event": "Private", "timestamp": at(1)}])
    await roll(engine)
    other = await new_workspace(sessionmaker)
    headers = {"Authorization": f"Bearer {other.secret_key}"}
    async with httpx.AsyncClient(base_url=api_app.state.base_url, headers=headers) as client:
        body = (await client.get("/api/v1/analytics/events", params={"name": "Private"})).json()
        assert body["total"]["total"] == 0
        assert (await client.get("/api/v1/analytics/events/names")).json()["data"] == []
        funnel = (
            await client.get("/api/v1/analytics/funnel", params=[("steps", "Private"), ("steps", "Private")])
        ).json()
        assert funnel["steps"][0]["count"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "/api/v1/analytics/events?interval=week",
        "/api/v1/analytics/events?interval=hour&from=2020-01-01T00:00:00Z",
        "/api/v1/analytics/events?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/api/v1/analytics/events?from=0001-01-01T00:00:00Z",
        "/api/v1/analytics/events?from=99999-01-01",
        "/api/v1/analytics/events?breakdown=plan",
        "/api/v1/analytics/events?name=",
        "/api/v1/analytics/funnel?steps=A",
        "/api/v1/analytics/funnel?steps=A&steps=B&window_hours=0",
        "/api/v1/analytics/funnel?steps=A&steps=B&from=2020-01-01T00:00:00Z",
        "/api/v1/analytics/email?flow_id=nope",
        "/api/v1/analytics/email?campaign_id=nope",
        "/api/v1/analytics/events?from=9999-12-30T00:00:00Z&to=9999-12-31T23:00:00Z",
        "/api/v1/analytics/profiles?from=0001-01-01T00:00:00%2B14:00&to=0001-01-02T00:00:00Z",
    ],
)
async def test_bad_parameters_are_4xx(api, query):
    r = await api.get(query)
    assert 400 <= r.status_code < 500, (query, r.status_code, r.text)


async def test_analytics_are_in_the_openapi_document(api):
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path in ("events", "events/names", "email", "profiles", "funnel", "overview"):
        assert f"/api/v1/analytics/{path}" in paths
    email_params = {p["name"]: p for p in paths["/api/v1/analytics/email"]["get"]["parameters"]}
    for name in ("flow_id", "campaign_id", "provider"):
        assert email_params[name]["description"], name


async def test_email_engagement_of_one_campaign(api, tracking_app, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 3, "fans")
    segment = await group_segment(api, "fans")
    campaign = await inline_campaign(api, [segment])
    other = await inline_campaign(api, [segment], name="Other")
    assert (await api.post(f"/api/v1/campaigns/{campaign['id']}/send")).status_code == 202
    assert (await finished(api, campaign["id"]))["sent"] == 3
    # A transactional send is in the workspace's totals, not the campaign's.
    template = await make_template(api)
    assert (await send(api, template["id"], "solo@example.com"))["status"] == "sent"
    html = sendgrid.delivered()[0]["html"]  # one person's message (a batch request holds several)
    pixel = re.search(r'src="[^"]+(/o/[^"]+\.gif)"', html).group(1)
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        for _ in range(2):  # two opens of one message: two events, one person
            assert (await client.get(pixel)).status_code == 200
    await roll(engine)

    params = {"interval": "hour", "from": at(2)}
    mine = (await api.get("/api/v1/analytics/email", params={**params, "campaign_id": campaign["id"]})).json()
    assert mine["campaign_id"] == campaign["id"]
    assert mine["totals"]["Sent"] == 3 and mine["totals"]["Opened"] == 2
    everything = (await api.get("/api/v1/analytics/email", params=params)).json()
    assert everything["totals"]["Sent"] == 4
    none = (await api.get("/api/v1/analytics/email", params={**params, "campaign_id": other["id"]})).json()
    assert none["totals"]["Sent"] == 0 and none["totals"]["Opened"] == 0
    daily = (await api.get("/api/v1/analytics/email", params={"campaign_id": campaign["id"]})).json()
    assert daily["totals"]["Sent"] == 3


async def test_old_activity_is_forgotten_once_a_day(engine, workspace):
    from sqlalchemy import text

    from analytics import rollup_repository

    old_day = (NOW - timedelta(days=40)).date()
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM analytics_watermarks WHERE name = 'active_days_pruned'"))
        await conn.execute(
            text("INSERT INTO analytics_active_days VALUES (:ws, :day, gen_random_uuid())"),
            {"ws": workspace.workspace_id, "day": old_day},
        )
        assert await rollup_repository.prune_active_days(conn) is True
        left = await conn.execute(
            text("SELECT count(*) FROM analytics_active_days WHERE workspace_id = :ws AND day = :day"),
            {"ws": workspace.workspace_id, "day": old_day},
        )
        assert left.scalar_one() == 0
        assert await rollup_repository.prune_active_days(conn) is False  # not again today
