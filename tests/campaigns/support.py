"""Helpers for campaign tests: people in bulk, a segment over them, a
campaign created through the API, waiting for its end, counting what the
fake providers received."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from sqlalchemy import text

from tests.delivery.conftest import SENDER
from tests.flows.support import wait_for

HTML = (
    "<html><body><p>Hi {{ profile.first_name }}, {{ data.offer }}</p>"
    "<a href='https://shop.example.com/sale'>Sale</a>"
    "<a href='{{ unsubscribe_url }}'>Unsubscribe</a></body></html>"
)


async def add_people(engine, workspace_id: uuid.UUID, n: int, group: str, start: int = 0) -> None:
    """`n` profiles with an address and trait `group` (in one statement: a
    few thousand people through the tracking API would only slow the test)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO profiles (id, workspace_id, email, external_id, traits) "
                "SELECT mp_uuid7(), :w, g || '-' || i || '@example.com', g || '-' || i, "
                "jsonb_build_object('group', g, 'first_name', 'P' || i) "
                "FROM CAST(:g AS text) AS g, generate_series(CAST(:a AS integer), CAST(:b AS integer)) AS i"
            ),
            {"w": workspace_id, "g": group, "a": start, "b": start + n - 1},
        )


async def group_segment(api, group: str, name: str | None = None) -> str:
    """A segment of the people with trait `group`."""
    body = {
        "name": name or f"group {group}",
        "definition": {"type": "trait", "path": "group", "op": "eq", "value": group},
    }
    r = await api.post("/api/v1/segments", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def inline_campaign(api, segment_ids: list[str], name: str = "Spring sale", **extra: Any) -> dict:
    """A draft campaign with inline content."""
    body = {
        "name": name,
        "content": {"subject": "Sale for {{ profile.first_name }}", "html": HTML, "from_email": SENDER},
        "audience": {"segment_ids": segment_ids},
        "data": {"offer": "20% off"},
    } | extra
    r = await api.post("/api/v1/campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def finished(api, campaign_id: str, timeout: float = 120) -> dict:
    """The campaign once its send workflow ended it (sent, cancelled or failed)."""

    async def ended():
        row = (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()
        return row if row["status"] in ("sent", "cancelled", "failed") and row["finished_at"] else None

    return await wait_for(ended, timeout=timeout, interval=0.25)


def per_address(*fakes, arrived: bool = False) -> Counter:
    """Messages each address received (answered 2xx), over the fake HTTP
    providers; with `arrived`, every request that reached a provider in full."""
    return Counter(message["to"] for fake in fakes for message in fake.delivered(arrived=arrived))
