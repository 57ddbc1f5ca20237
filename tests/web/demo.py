"""A small, believable workspace for the browser tests and their
screenshots, put in through the real APIs: profiles and a week of events
(tracking), a provider (the fake SendGrid), a template, real sends with
opens and clicks through the tracking endpoints, a segment refreshed by its
workflow, a campaign scheduled for next week, and an active flow with
people at different steps."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from analytics.rollups import rollup_pass
from tests.delivery.conftest import add_sendgrid, make_template, send

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
]
PLANS = ["free", "free", "free", "starter", "pro", "enterprise"]
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "JP"]
PATHS = ["/", "/pricing", "/docs", "/blog", "/features"]


@dataclass
class Demo:
    """What the seed made."""

    profile_ids: list[str]
    segment_id: str
    flow_id: str
    template_id: str


def flow_graph(template_id: str) -> dict:
    """Wait up to an hour for an order; remind those who did not buy."""
    return {
        "trigger": {"type": "api"},
        "start": "wait_order",
        "nodes": [
            {
                "id": "wait_order",
                "type": "wait_for_event",
                "name": "Order Completed",
                "timeout_seconds": 3600,
                "on_event": "thank_you",
                "on_timeout": "reminder",
            },
            {"id": "reminder", "type": "send_email", "template_id": template_id, "next": "done"},
            {
                "id": "thank_you",
                "type": "update_profile",
                "traits": {"bought_after_flow": True},
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


async def _until(check, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("demo data did not settle in time")
        await asyncio.sleep(0.3)


async def seed(
    api: httpx.AsyncClient, tracking: httpx.AsyncClient, engine, sendgrid, people: int = 48
) -> Demo:
    rng = random.Random(7)
    now = datetime.now(UTC)
    calls: list[dict] = []
    for n in range(people):
        name = FIRST[n % len(FIRST)]
        user = f"user_{n + 1:03d}"
        calls.append(
            {
                "type": "identify",
                "userId": user,
                "timestamp": (now - timedelta(days=6, hours=rng.random() * 140)).isoformat(),
                "traits": {
                    "email": f"{name.lower()}.{n + 1}@example.com",
                    "first_name": name,
                    "plan": PLANS[n % len(PLANS)],
                    "country": COUNTRIES[n % len(COUNTRIES)],
                },
            }
        )
        for _ in range(rng.randint(3, 14)):
            when = now - timedelta(hours=rng.random() * 160)
            roll = rng.random()
            if roll < 0.5:
                event, props = "Page Viewed", {"path": rng.choice(PATHS)}
            elif roll < 0.75:
                event, props = "Product Viewed", {"category": rng.choice(["shoes", "bags", "hats"])}
            elif roll < 0.9:
                event, props = "Added to Cart", {"category": rng.choice(["shoes", "bags", "hats"])}
            else:
                event, props = "Order Completed", {"currency": rng.choice(["USD", "EUR"])}
            calls.append({"userId": user, "event": event, "timestamp": when.isoformat(), "properties": props})
    for start in range(0, len(calls), 200):
        r = await tracking.post("/track/batch", json={"batch": calls[start : start + 200]})
        assert r.status_code == 200, r.text
    profiles = (await api.get("/api/v1/profiles", params={"limit": 200})).json()["data"]
    ids = [p["id"] for p in sorted(profiles, key=lambda p: p["external_id"])]

    await add_sendgrid(api, sendgrid, name="SendGrid (primary)", rate_limit=20)
    template = await make_template(
        api,
        name="Come back",
        subject="{{ profile.first_name }}, your cart misses you",
        html="<html><body><h2>Hi {{ profile.first_name }}!</h2><p>Your cart is waiting.</p>"
        "<p><a href='https://shop.example.com/cart'>Back to my cart</a></p>"
        "<p style='font-size:12px'><a href='{{ unsubscribe_url }}'>Unsubscribe</a></p></body></html>",
    )
    for profile in profiles[:10]:
        email = profile["email"]
        message = await send(api, template["id"], email)
        assert message["status"] == "sent", message
    bodies = [m["html"] for m in sendgrid.delivered()[-10:]]
    async with httpx.AsyncClient(base_url=str(tracking.base_url), follow_redirects=False) as public:
        for n, html in enumerate(bodies):
            if n < 7:
                pixel = re.search(r'src="[^"]+(/o/[^"]+\.gif)"', html).group(1)
                assert (await public.get(pixel)).status_code == 200
            if n < 3:
                click = re.search(r"""href=["'][^"']+(/c/[^"']+)["']""", html).group(1)
                assert (await public.get(click)).status_code in (302, 303, 307)

    segment = (
        await api.post(
            "/api/v1/segments",
            json={
                "name": "Paying customers",
                "description": "On a paid plan and ordered in the last 30 days",
                "definition": {
                    "type": "all",
                    "conditions": [
                        {
                            "type": "trait",
                            "path": "plan",
                            "op": "in",
                            "value": ["starter", "pro", "enterprise"],
                        },
                        {
                            "type": "event",
                            "name": "Order Completed",
                            "count": {"op": ">=", "value": 1},
                            "within": {"last": 30},
                        },
                    ],
                },
            },
        )
    ).json()
    run = await api.post(f"/api/v1/segments/{segment['id']}/recalculate", params={"wait": 30})
    assert run.json()["status"] == "completed", run.text
    await api.post(
        "/api/v1/segments",
        json={
            "name": "Everyone in Germany",
            "definition": {"type": "trait", "path": "country", "op": "eq", "value": "DE"},
        },
    )

    # A campaign scheduled for next week: the overview lists it among the running ones.
    campaign = await api.post(
        "/api/v1/campaigns",
        json={
            "name": "Winter sale",
            "content": {
                "template_id": template["id"],
                "subject": "Winter sale: 30% off, {{ profile.first_name }}",
            },
            "audience": {"segment_ids": [segment["id"]]},
        },
    )
    assert campaign.status_code == 201, campaign.text
    next_week = (now + timedelta(days=7)).replace(hour=9, minute=0, second=0, microsecond=0, tzinfo=None)
    r = await api.post(
        f"/api/v1/campaigns/{campaign.json()['id']}/schedule",
        json={"scheduled_at": next_week.isoformat(), "local_time": True},
    )
    assert r.status_code == 202, r.text

    flow = (
        await api.post(
            "/api/v1/flows", json={"name": "Abandoned cart", "definition": flow_graph(template["id"])}
        )
    ).json()
    assert (await api.post(f"/api/v1/flows/{flow['id']}/activate")).status_code == 200
    enrolled = ids[:6]
    for pid in enrolled:
        r = await api.post(f"/api/v1/flows/{flow['id']}/enroll", json={"profile_id": pid})
        assert r.status_code == 202, r.text

    async def all_waiting() -> bool:
        stats = (await api.get(f"/api/v1/flows/{flow['id']}/stats")).json()
        node = next((n for n in stats["nodes"] if n["node_id"] == "wait_order"), None)
        return bool(node) and node["waiting"] == len(enrolled)

    await _until(all_waiting)
    buyers = [f"user_{n:03d}" for n in (1, 2)]
    r = await tracking.post(
        "/track/batch", json={"batch": [{"userId": u, "event": "Order Completed"} for u in buyers]}
    )
    assert r.status_code == 200

    async def bought() -> bool:
        stats = (await api.get(f"/api/v1/flows/{flow['id']}/stats")).json()
        node = next(n for n in stats["nodes"] if n["node_id"] == "wait_order")
        return node["edges"].get("event", 0) == len(buyers) and stats["enrollments"]["completed"] == len(
            buyers
        )

    await _until(bought)
    await rollup_pass(engine, lag_seconds=0, slice_hours=24)
    return Demo(ids, segment["id"], flow["id"], template["id"])
