"""Unknown-key storms: lookups only read, `last_used_at` is written at most
once a minute, and failed lookups are limited per client address (429 with
Retry-After) without slowing valid keys; Redis down leaves keys working."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event, text

from core.errors import Unauthorized
from tests.support.servers import free_port
from workspaces.auth_limiter import AuthFailureLimiter
from workspaces.service import KeyAuthenticator

ATTACKER = "198.51.100.7"
CUSTOMER = "192.0.2.10"


def _statements(engine) -> list[str]:
    """Every SQL statement the engine runs from now on (a real listener, not a mock)."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


async def _last_used(engine, workspace) -> list:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT last_used_at FROM api_keys WHERE workspace_id = :ws ORDER BY kind"),
            {"ws": workspace.workspace_id},
        )
        return [r[0] for r in rows]


async def test_unknown_key_flood_gets_429_and_valid_keys_keep_working(tracking_app, workspace, settings):
    statements = _statements(tracking_app.state.services.engine)
    statuses: list[int] = []
    retry_after: set[str] = set()
    valid_latency: list[float] = []
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url, timeout=10) as client:
        started = time.monotonic()
        for batch in range(15):
            bad = [
                client.post(
                    "/track",
                    json={"userId": "x", "event": "E"},
                    headers={"Authorization": f"Bearer pk_{uuid.uuid4().hex}", "X-Forwarded-For": ATTACKER},
                )
                for _ in range(20)
            ]
            for r in await asyncio.gather(*bad):
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry_after.add(r.headers.get("retry-after"))
            t0 = time.monotonic()
            good = await client.post(
                "/track",
                json={"userId": f"u{batch}", "event": "E"},
                headers={"Authorization": f"Bearer {workspace.public_key}", "X-Forwarded-For": CUSTOMER},
            )
            valid_latency.append(time.monotonic() - t0)
            assert good.status_code == 200, good.text
        elapsed = time.monotonic() - started
    refused = statuses.count(401)
    assert set(statuses) == {401, 429}
    # The burst plus the steady rate over the run, and no more, reached PostgreSQL
    # (plus one batch: requests in flight together all pass the check before any is counted).
    budget = settings.auth_failure_burst + 20 + settings.auth_failures_per_second * elapsed
    assert refused <= budget, (refused, budget)
    assert statuses.count(429) >= 300 - budget
    assert retry_after and all(v and int(v) >= 1 for v in retry_after)
    # Unknown keys cost reads only; the valid key was written at most once.
    key_statements = [s for s in statements if "api_keys" in s]
    updates = [s for s in key_statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) <= 1, updates
    assert len(key_statements) <= refused + 2 * len(valid_latency)
    assert max(valid_latency) < 1.0, valid_latency


async def test_management_api_limits_unknown_keys_too(api_app, settings):
    codes: list[int] = []
    address = f"203.0.113.{uuid.uuid4().int % 250 + 1}"  # a fresh bucket for this test
    async with httpx.AsyncClient(base_url=api_app.state.base_url, timeout=10) as client:
        deadline = time.monotonic() + 10
        while 429 not in codes and time.monotonic() < deadline:
            rs = await asyncio.gather(
                *(
                    client.get(
                        "/api/v1/templates",
                        headers={
                            "Authorization": f"Bearer sk_{uuid.uuid4().hex}",
                            "X-Forwarded-For": address,
                        },
                    )
                    for _ in range(10)
                )
            )
            codes += [r.status_code for r in rs]
    assert set(codes) <= {401, 429}, codes
    assert 429 in codes, codes
    assert codes.count(401) <= settings.auth_failure_burst + 10 + settings.auth_failures_per_second * 10


async def test_last_used_at_is_written_at_most_once_a_minute(tracking, workspace, engine, settings):
    assert (await tracking.post("/track", json={"userId": "a", "event": "E"})).status_code == 200
    first = await _last_used(engine, workspace)
    assert any(first)
    # Several cache expiries (KEY_CACHE_SECONDS is short in tests), so several lookups.
    for n in range(4):
        await asyncio.sleep(settings.key_cache_seconds + 0.1)
        assert (await tracking.post("/track", json={"userId": f"a{n}", "event": "E"})).status_code == 200
    assert await _last_used(engine, workspace) == first


async def test_redis_down_fails_open(engine, workspace):
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    keys = KeyAuthenticator(engine, ttl=0.01, limiter=AuthFailureLimiter(dead, "mp_test:", 1.0, 1))
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await keys.require(f"pk_{uuid.uuid4().hex}", "public", ATTACKER)
        await asyncio.sleep(0.02)
        assert (
            await keys.require(workspace.public_key, "public", ATTACKER)
        ).workspace_id == workspace.workspace_id
    assert time.monotonic() - started < 3
    await dead.aclose()
