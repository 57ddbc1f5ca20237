"""Helpers for campaign tests: people in bulk, a segment over them, a
campaign created through the API, waiting for its end, counting what the
fake providers received, and the campaign's counters against a recount."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from sqlalchemy import text

from campaigns import repository as campaigns_repo
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


# The stats recounted from the rows (the snapshot joined to its messages):
# what the campaign's counters (db/tables.campaign_counters) must equal.
RECOUNT_SQL = """
SELECT count(*) AS recipients,
       count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE r.status = 'capped') AS capped,
       count(*) FILTER (WHERE r.status = 'pending' AND (m.id IS NULL OR m.status IN ('queued', 'sending')))
           AS pending,
       count(m.sent_at) AS sent,
       count(m.delivered_at) AS delivered,
       count(*) FILTER (WHERE m.status = 'bounced') AS bounced,
       count(*) FILTER (WHERE m.status = 'complained') AS complained,
       count(*) FILTER (WHERE m.status = 'failed') AS failed,
       count(*) FILTER (WHERE m.status = 'suppressed') AS suppressed,
       count(*) FILTER (WHERE m.status = 'unknown') AS unknown,
       count(m.opened_at) AS unique_opens,
       count(m.clicked_at) AS unique_clicks
FROM campaign_recipients r
LEFT JOIN messages m ON m.id = r.message_id
WHERE r.campaign_id = :campaign
"""
RECOUNT_PROVIDERS_SQL = """
SELECT m.provider_kind AS provider, count(m.sent_at) AS sent, count(m.delivered_at) AS delivered,
       count(*) FILTER (WHERE m.status = 'bounced') AS bounced,
       count(m.opened_at) AS opened, count(m.clicked_at) AS clicked
FROM campaign_recipients r
JOIN messages m ON m.id = r.message_id
WHERE r.campaign_id = :campaign AND m.provider_kind IS NOT NULL
GROUP BY m.provider_kind ORDER BY m.provider_kind
"""
RECOUNT_VARIANTS_SQL = """
SELECT r.variant, count(*) AS recipients, count(m.sent_at) AS sent,
       count(m.opened_at) AS unique_opens, count(m.clicked_at) AS unique_clicks,
       count(*) FILTER (WHERE r.status = 'pending' AND (m.id IS NULL OR m.status IN ('queued', 'sending')))
           AS pending
FROM campaign_recipients r
LEFT JOIN messages m ON m.id = r.message_id
WHERE r.campaign_id = :campaign AND r.variant IS NOT NULL
GROUP BY r.variant ORDER BY r.variant
"""


async def assert_counted(engine, campaign_id: str) -> dict:
    """The campaign's counters equal a recount from its rows (totals, per
    provider, per A/B variant, and the list's engagement); the totals."""
    cid = uuid.UUID(campaign_id)
    params = {"campaign": cid}
    async with engine.connect() as conn:

        async def recount(sql: str) -> list[dict]:
            return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]

        [totals] = await recount(RECOUNT_SQL)
        assert dict(await campaigns_repo.stats(conn, cid)) == totals
        providers = [dict(r) for r in await campaigns_repo.provider_stats(conn, cid)]
        assert providers == await recount(RECOUNT_PROVIDERS_SQL)
        variants = [dict(r) for r in await campaigns_repo.variant_stats(conn, cid)]
        assert variants == await recount(RECOUNT_VARIANTS_SQL)
        listed = [dict(r) for r in await campaigns_repo.list_engagement(conn, [cid])]
        wanted = {"campaign_id": cid} | {k: totals[k] for k in ("recipients", "sent", "unique_opens")}
        wanted |= {k: totals[k] for k in ("unique_clicks", "pending")}
        assert listed == ([wanted] if totals["recipients"] else [])
    return totals
