"""Campaign sends under real process faults: the worker process killed
with -9 mid-send, and the Temporal dev server (SQLite file) restarted
mid-send. The campaign completes with 0 duplicates and 0 lost, counted at
the fake provider (every request that reached it in full, including those
held in the provider when the worker died), and no message left `unknown`:
the messages the dead worker was sending are looked up at the fake
SendGrid's Email Activity once their claims settled (reconciliation) —
recorded `sent` when it has them, sent now when it does not.

The tests use a database and a task queue of their own, so only the
worker processes started here run their workflows."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from core.settings import Settings
from tests.campaigns.support import add_people, finished, group_segment, inline_campaign, per_address
from tests.conftest import new_workspace
from tests.delivery.conftest import add_provider
from tests.flows.support import wait_for
from tests.support.processes import (
    OwnStack,
    cli_env,
    cli_process,
    kill,
    own_stack,
    tail,
    temporal_dev_server,
    wait_for_temporal,
    worker_ready,
)
from tests.support.servers import free_port, serve


@pytest.fixture(scope="module")
async def stack(pg_server, settings) -> AsyncIterator[OwnStack]:
    async with own_stack(
        pg_server,
        settings,
        "mp_campaign_faults",
        # A dead worker's batch is retried within seconds.
        campaign_heartbeat_seconds=10.0,
        campaign_batch_size=200,
        # Interrupted sends are looked up once claimed longer ago than the
        # provider's timeout and rate wait (PROVIDER_TIMEOUT + 2 s), the
        # shortest the sender allows.
        email_reconcile_settle_seconds=1.0,
    ) as own:
        yield own


async def _message_statuses(engine, campaign_id: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status, count(*) FROM messages WHERE campaign_id = :c GROUP BY 1"),
            {"c": campaign_id},
        )
        return {status: n for status, n in rows}


@contextlib.asynccontextmanager
async def _api(settings: Settings, keys) -> AsyncIterator[httpx.AsyncClient]:
    """The management API on `settings`, served in this process, with the workspace's key."""
    from api.app import create_app

    async with (
        serve(create_app(settings)) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {keys.secret_key}"}, timeout=30
        ) as api,
    ):
        yield api


# Long enough that a request the busy machine slows does not time out (it
# would go back to the queue and out again), short enough that the
# interrupted sends settle soon (the settle time is never shorter).
PROVIDER_TIMEOUT = 20


async def _prepare(api, stack: OwnStack, keys, sendgrid, n: int) -> str:
    await add_provider(
        api,
        "sendgrid",
        "sendgrid",
        10,
        settings={"base_url": sendgrid.base_url, "timeout": PROVIDER_TIMEOUT},
        credentials={"api_key": sendgrid.token},
    )
    await add_people(stack.engine, keys.workspace_id, n, "f")
    campaign = await inline_campaign(api, [await group_segment(api, "f")])
    return campaign["id"]


async def _found_by_lookup(engine, campaign_id: str) -> int:
    """Messages recorded `sent` because the provider's Email Activity had them."""
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT count(*) FROM messages WHERE campaign_id = :c AND status = 'sent' "
                    "AND attempts::text LIKE '%found by lookup%'"
                ),
                {"c": campaign_id},
            )
        ).scalar()


async def _sent_events(engine, campaign_id: str) -> int:
    """`Email Sent` events of the campaign (one per message, whoever recorded it)."""
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT count(*) FROM events "
                    "WHERE name = 'Email Sent' AND properties->>'campaign_id' = :c"
                ),
                {"c": campaign_id},
            )
        ).scalar()


async def _received_at_least(fake, n: int) -> bool:
    return fake.accepted >= n


async def _mid_request(fake, n: int) -> bool:
    """At least `n` messages accepted, and a request held inside the fake now."""
    return fake.accepted >= n and len(fake.arrived) > len(fake.received)


async def test_worker_killed_mid_send(stack: OwnStack, sendgrid, tmp_path: Path):
    # SendGrid takes a batch of 500 in one request, four batches in flight:
    # enough recipients, and slow enough requests, that the kill comes mid-send.
    n = 6000
    keys = await new_workspace(stack.sessionmaker)
    sendgrid.mode, sendgrid.delay = "slow", 1.0  # requests are inside the provider when the kill comes
    log = tmp_path / "worker.log"
    env = cli_env(stack.settings)
    async with _api(stack.settings, keys) as api:
        cid = await _prepare(api, stack, keys, sendgrid, n)
        with cli_process(["worker"], env, log) as first:
            await worker_ready(log, first)
            assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
            # Killed while a request is inside the provider (the fake holds
            # each for a second), so that request's claims are left behind.
            await wait_for(lambda: _mid_request(sendgrid, n // 4), timeout=120, interval=0.01)
            kill(first)
        at_kill = sendgrid.accepted
        with cli_process(["worker"], env, log) as second:
            await worker_ready(log, second)
            done = await finished(api, cid, timeout=240)
            await asyncio.sleep(1.0)  # a duplicate send would land now
            assert second.poll() is None, tail(log)
    assert at_kill < n
    assert done["status"] == "sent"
    # The dead worker left claims behind, and they were looked up: those
    # whose request was inside the provider at the kill were found there.
    assert sendgrid.lookups, "no interrupted send was reconciled"
    found = await _found_by_lookup(stack.engine, cid)
    assert found >= 1
    # 0 duplicates and 0 lost, counted at the provider.
    assert per_address(sendgrid, arrived=True) == {f"f-{i}@example.com": 1 for i in range(n)}
    # Every message is `sent`, none `unknown`, and the stats say so.
    assert await _message_statuses(stack.engine, cid) == {"sent": n}
    assert done["sent"] == n and done["unknown"] == 0
    assert await _sent_events(stack.engine, cid) == n


async def test_temporal_restarted_mid_send(stack: OwnStack, sendgrid, tmp_path: Path):
    n = 6000
    keys = await new_workspace(stack.sessionmaker)
    sendgrid.mode, sendgrid.delay = "slow", 1.0
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = temporal_dev_server(tmp_path, port)
    settings = stack.settings.model_copy(update={"temporal_address": address})
    log = tmp_path / "worker.log"
    server.start()
    try:
        await wait_for_temporal(address)
        async with _api(settings, keys) as api:
            cid = await _prepare(api, stack, keys, sendgrid, n)
            with cli_process(["worker"], cli_env(settings), log) as worker:
                await worker_ready(log, worker)
                assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
                await wait_for(lambda: _received_at_least(sendgrid, n // 4), timeout=120, interval=0.05)
                assert server.proc is not None
                server.proc.send_signal(signal.SIGTERM)
                server.proc.wait(30)
                at_stop = sendgrid.accepted
                server.start()
                await wait_for_temporal(address)
                done = await finished(api, cid, timeout=240)
                await asyncio.sleep(1.0)
                assert worker.poll() is None, tail(log)  # the worker rode out the outage
    finally:
        server.stop()
    assert at_stop < n
    assert done["status"] == "sent"
    assert per_address(sendgrid, arrived=True) == {f"f-{i}@example.com": 1 for i in range(n)}
    assert await _message_statuses(stack.engine, cid) == {"sent": n}
    assert done["sent"] == n and done["unknown"] == 0
    assert await _sent_events(stack.engine, cid) == n
