"""Campaign sends under real process faults: the worker process killed
with -9 mid-send, and the Temporal dev server (SQLite file) restarted
mid-send. The campaign completes with 0 duplicates, counted at the fake
provider (every request that reached it in full, including those held in
the provider when the worker died). After a Temporal restart nothing is
lost; after a kill -9, only messages the dead worker was sending can be
— each is flagged `unknown`, never sent twice.

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
from definitions.campaigns import DEFAULT_BATCH_SIZE, DEFAULT_WINDOW
from tests.campaigns.support import add_people, finished, group_segment, inline_campaign, per_address
from tests.conftest import new_workspace
from tests.delivery.conftest import add_provider
from tests.flows.support import wait_for
from tests.support.processes import (
    OwnStack,
    cli_env,
    cli_process,
    kill,
    logged,
    own_stack,
    tail,
    temporal_dev_server,
    wait_for_temporal,
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
    ) as own:
        yield own


async def _worker_ready(log: Path, proc, timeout: float = 60) -> None:
    async def polling():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{tail(log)}")
        return logged(log, "worker polling")

    await wait_for(polling, timeout=timeout, interval=0.1)


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


async def _prepare(api, stack: OwnStack, keys, sendgrid, n: int) -> str:
    # A long timeout: a request the busy machine slows must not fail over.
    await add_provider(
        api,
        "sendgrid",
        "sendgrid",
        10,
        settings={"base_url": sendgrid.base_url, "timeout": 60},
        credentials={"api_key": sendgrid.token},
    )
    await add_people(stack.engine, keys.workspace_id, n, "f")
    campaign = await inline_campaign(api, [await group_segment(api, "f")])
    return campaign["id"]


async def _sent_addresses(engine, campaign_id: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email::text FROM messages WHERE campaign_id = :c AND status = 'sent'"),
            {"c": campaign_id},
        )
        return {r[0] for r in rows}


async def _received_at_least(fake, n: int) -> bool:
    return fake.accepted >= n


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
            await _worker_ready(log, first)
            assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
            await wait_for(lambda: _received_at_least(sendgrid, n // 4), timeout=120, interval=0.05)
            kill(first)
        at_kill = sendgrid.accepted
        with cli_process(["worker"], env, log) as second:
            await _worker_ready(log, second)
            done = await finished(api, cid, timeout=240)
            await asyncio.sleep(1.0)  # a duplicate send would land now
            assert second.poll() is None, tail(log)
    assert at_kill < n
    assert done["status"] == "sent"
    arrived = per_address(sendgrid, arrived=True)
    statuses = await _message_statuses(stack.engine, cid)
    # 0 duplicates: no address got a second message.
    assert max(arrived.values()) == 1
    # Every recipient is accounted for: `sent` (and the provider has it) or
    # `unknown` — claimed by an attempt that died or overlapped with another,
    # so never sent again. A message the dead worker had claimed but whose
    # request had not reached the provider is lost to that rule (at most
    # once, as for transactional sends); it is flagged `unknown`, and there
    # are at most as many as the worker had messages in flight (its batches,
    # a request each).
    assert set(statuses) <= {"sent", "unknown"} and sum(statuses.values()) == n
    assert await _sent_addresses(stack.engine, cid) <= set(arrived)
    not_delivered = n - len(arrived)
    assert not_delivered <= DEFAULT_WINDOW * DEFAULT_BATCH_SIZE
    assert statuses.get("unknown", 0) >= not_delivered
    assert done["sent"] + done["unknown"] == n


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
                await _worker_ready(log, worker)
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
    statuses = await _message_statuses(stack.engine, cid)
    assert set(statuses) <= {"sent", "unknown"} and sum(statuses.values()) == n
