"""Flow runs under real process faults: the worker killed with -9 while
enrollments wait and while a step runs, the Temporal dev server (SQLite
file) restarted mid-wait, tracking killed right after acknowledging trigger
events. Every enrollment completes, none twice, no email twice.

The tests use a database of their own (so only the worker processes
started here dispatch its outbox) and a task queue of their own."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import new_workspace
from tests.delivery.conftest import add_sendgrid, make_template
from tests.flows.support import active_flow, enrollments, wait_for
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
    # Interrupted sends are looked up as soon as the sender allows (their
    # provider's timeout and rate wait after the claim).
    async with own_stack(pg_server, settings, "mp_flow_faults", email_reconcile_settle_seconds=1.0) as own:
        yield own


@dataclass
class HeldWebhook:
    """A webhook receiver that holds each request until `release()`, and
    records the Idempotency-Key of every request it got."""

    keys: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self, request: Request) -> Response:
        self.keys.append(request.headers["idempotency-key"])
        await self.released.wait()
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.receive, methods=["POST"])])


async def _scalar(engine, sql: str, **params):
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def _all_at(engine, flow_id, node: str, n: int):
    rows = await enrollments(engine, flow_id)
    return len(rows) == n and all(r["current_node"] == node for r in rows)


async def _all_done(engine, flow_id, n: int):
    rows = await enrollments(engine, flow_id)
    return rows if len(rows) == n and all(r["status"] != "running" for r in rows) else None


async def _steps(engine, flow_id) -> dict[uuid.UUID, list[str]]:
    """Node ids each enrollment stepped through, in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT enrollment_id, node_id FROM flow_steps WHERE flow_id = :f ORDER BY enrollment_id, seq"
            ),
            {"f": flow_id},
        )
        out: dict[uuid.UUID, list[str]] = {}
        for enrollment_id, node_id in rows:
            out.setdefault(enrollment_id, []).append(node_id)
        return out


async def _people(tracking: httpx.AsyncClient, prefix: str, n: int) -> list[str]:
    users = [f"{prefix}-{i}" for i in range(n)]
    for user in users:
        body = {"userId": user, "traits": {"email": f"{user}@example.com", "first_name": user}}
        assert (await tracking.post("/identify", json=body)).status_code == 200
    return users


@dataclass
class Apps:
    """HTTP clients of a fresh workspace."""

    api: httpx.AsyncClient
    tracking: httpx.AsyncClient
    workspace_id: uuid.UUID


@pytest.fixture
async def apps(stack: OwnStack) -> AsyncIterator[Apps]:
    """Management and tracking clients of a fresh workspace, served in this
    process against the module's database."""
    from api.app import create_app as create_api
    from tracking.app import create_app as create_tracking

    keys = await new_workspace(stack.sessionmaker)
    async with (
        serve(create_api(stack.settings)) as api_url,
        serve(create_tracking(stack.settings)) as tracking_url,
        httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {keys.secret_key}"}, timeout=30
        ) as api,
        httpx.AsyncClient(
            base_url=tracking_url, headers={"Authorization": f"Bearer {keys.public_key}"}, timeout=30
        ) as tracking,
    ):
        yield Apps(api, tracking, keys.workspace_id)


def _emails_per_address(sendgrid) -> Counter:
    return Counter(p["personalizations"][0]["to"][0]["email"] for p in sendgrid.received)


async def test_worker_killed_mid_step_and_mid_wait(stack: OwnStack, apps, sendgrid, tmp_path: Path):
    api, tracking, ws = apps.api, apps.tracking, apps.workspace_id
    engine = stack.engine
    hook = HeldWebhook()
    people = 4
    async with serve(hook.app()) as hook_url:
        await add_sendgrid(api, sendgrid)
        template = await make_template(api)
        definition = {
            "trigger": {"type": "event", "name": "Signed Up"},
            "start": "hook",
            "nodes": [
                {"id": "hook", "type": "webhook", "url": f"{hook_url}/hook", "timeout_seconds": 3,
                 "max_attempts": 10, "next": "nap"},
                {"id": "nap", "type": "wait", "seconds": 6, "next": "mail"},
                {"id": "mail", "type": "send_email", "template_id": template["id"], "next": "done"},
                {"id": "done", "type": "exit"},
            ],
        }  # fmt: skip
        flow_id = await active_flow(stack.sessionmaker, ws, definition)
        users = await _people(tracking, "signup", people)
        env = cli_env(stack.settings)
        log = tmp_path / "worker.log"

        # 1. Killed while every enrollment is inside the webhook step.
        with cli_process(["worker"], env, log) as first:
            await worker_ready(log, first)
            for user in users:
                r = await tracking.post("/track", json={"userId": user, "event": "Signed Up"})
                assert r.status_code == 200
            await wait_for(lambda: _held(hook, people), timeout=60)
            kill(first)
        held_at_kill = len(set(hook.keys))
        hook.released.set()  # the retries on the next worker are answered at once

        # 2. Killed while every enrollment waits on its timer.
        with cli_process(["worker"], env, log) as second:
            await worker_ready(log, second)
            await wait_for(lambda: _all_at(engine, flow_id, "nap", people), timeout=60)
            kill(second)
        sent_before = len(sendgrid.received)

        # 3. A third worker finishes them all.
        with cli_process(["worker"], env, log) as third:
            await worker_ready(log, third)
            rows = await wait_for(lambda: _all_done(engine, flow_id, people), timeout=60)
            await asyncio.sleep(1)  # a duplicate send would land now
            assert third.poll() is None, tail(log)

    assert held_at_kill == people
    assert sent_before == 0  # the kill came while they all waited
    assert [r["status"] for r in rows] == ["completed"] * people
    assert len({r["profile_id"] for r in rows}) == people  # one enrollment each
    steps = await _steps(engine, flow_id)
    assert sorted(steps) == sorted(r["id"] for r in rows)
    assert all(nodes == ["hook", "nap", "mail", "done"] for nodes in steps.values()), steps
    # Webhooks are at least once: the call cut off by the kill was made
    # again, with the same Idempotency-Key. Emails exactly once.
    calls = Counter(hook.keys)
    assert set(calls) == {f"{r['id']}:hook" for r in rows}
    assert min(calls.values()) >= 2
    assert _emails_per_address(sendgrid) == {f"{u}@example.com": 1 for u in users}
    sent = await _scalar(
        engine, "SELECT count(*) FROM messages WHERE flow_id = :f AND status = 'sent'", f=flow_id
    )
    assert sent == people


async def _held(hook: HeldWebhook, n: int) -> bool:
    return len(set(hook.keys)) >= n


async def test_worker_killed_mid_send_sends_no_email_twice(stack: OwnStack, apps, sendgrid, tmp_path: Path):
    api, tracking, ws = apps.api, apps.tracking, apps.workspace_id
    engine = stack.engine
    people = 3
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    definition = {
        "trigger": {"type": "event", "name": "Ordered"},
        "start": "mail",
        "nodes": [
            {"id": "mail", "type": "send_email", "template_id": template["id"], "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }
    flow_id = await active_flow(stack.sessionmaker, ws, definition)
    users = await _people(tracking, "buyer", people)
    sendgrid.mode, sendgrid.delay = "slow", 2.5  # each send holds the provider call
    env = cli_env(stack.settings)
    log = tmp_path / "worker.log"
    with cli_process(["worker"], env, log) as first:
        await worker_ready(log, first)
        for user in users:
            assert (
                await tracking.post("/track", json={"userId": user, "event": "Ordered"})
            ).status_code == 200

        async def in_flight():
            return sendgrid.requests >= people

        await wait_for(in_flight, timeout=60, interval=0.05)
        kill(first)  # every send is inside the provider call
    sendgrid.mode = "ok"
    with cli_process(["worker"], env, log) as second:
        await worker_ready(log, second)
        rows = await wait_for(lambda: _all_done(engine, flow_id, people), timeout=60)
        await asyncio.sleep(1)
    assert [r["status"] for r in rows] == ["completed"] * people
    async with engine.connect() as conn:
        messages = (
            await conn.execute(
                text("SELECT enrollment_id, status FROM messages WHERE flow_id = :f"), {"f": flow_id}
            )
        ).all()
    # One message per enrollment. The retry found each one claimed by the
    # dead attempt and, instead of calling the provider again, looked it up
    # (reconciliation): every request was inside the provider at the kill,
    # so each is found there and recorded `sent`, never sent twice.
    assert sorted(m[0] for m in messages) == sorted(r["id"] for r in rows)
    assert {m[1] for m in messages} == {"sent"}
    assert sendgrid.lookups, "the interrupted sends were not looked up"
    assert sendgrid.requests == people
    assert all(n == 1 for n in _emails_per_address(sendgrid).values())


async def test_temporal_restarted_mid_wait(stack: OwnStack, apps, sendgrid, tmp_path: Path):
    api, tracking, ws = apps.api, apps.tracking, apps.workspace_id
    engine = stack.engine
    people = 4
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    definition = {
        "trigger": {"type": "event", "name": "Trial Started"},
        "start": "nap",
        "nodes": [
            {"id": "nap", "type": "wait", "seconds": 8, "next": "mail"},
            {"id": "mail", "type": "send_email", "template_id": template["id"], "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }
    flow_id = await active_flow(stack.sessionmaker, ws, definition)
    users = await _people(tracking, "trial", people)
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = temporal_dev_server(tmp_path, port)
    settings = stack.settings.model_copy(update={"temporal_address": address})
    log = tmp_path / "worker.log"
    server.start()
    try:
        await wait_for_temporal(address)
        with cli_process(["worker"], cli_env(settings), log) as worker:
            await worker_ready(log, worker)
            for user in users:
                r = await tracking.post("/track", json={"userId": user, "event": "Trial Started"})
                assert r.status_code == 200
            await wait_for(lambda: _all_at(engine, flow_id, "nap", people), timeout=60)
            # Stopped while every run waits on its timer, started again on the same file.
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(30)
            assert sendgrid.received == []
            server.start()
            await wait_for_temporal(address)
            rows = await wait_for(lambda: _all_done(engine, flow_id, people), timeout=90)
            await asyncio.sleep(1)
            assert worker.poll() is None, tail(log)  # the worker rode out the outage
    finally:
        server.stop()
    assert [r["status"] for r in rows] == ["completed"] * people
    steps = await _steps(engine, flow_id)
    assert all(nodes == ["nap", "mail", "done"] for nodes in steps.values()), steps
    assert _emails_per_address(sendgrid) == {f"{u}@example.com": 1 for u in users}


async def test_tracking_killed_after_acknowledging_triggers(stack: OwnStack, tmp_path: Path):
    engine = stack.engine
    keys = await new_workspace(stack.sessionmaker)
    definition = {
        "trigger": {"type": "event", "name": "Joined"},
        "start": "nap",
        "nodes": [
            {"id": "nap", "type": "wait", "seconds": 1, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }
    flow_id = await active_flow(stack.sessionmaker, keys.workspace_id, definition)
    port = free_port()
    acknowledged: list[str] = []
    worker_log, tracking_log = tmp_path / "worker.log", tmp_path / "tracking.log"
    tracking_env = cli_env(stack.settings, TRACKING_PORT=str(port))
    with (
        cli_process(["worker"], cli_env(stack.settings), worker_log) as worker,
        cli_process(["tracking"], tracking_env, tracking_log) as proc,
    ):
        await worker_ready(worker_log, worker)
        headers = {"Authorization": f"Bearer {keys.public_key}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10
        ) as client:

            async def up():
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=60, interval=0.1)

            async def sender(n: int) -> None:
                for i in range(500):
                    message_id = f"join-{n}-{i}"
                    body = {"userId": message_id, "event": "Joined", "messageId": message_id}
                    try:
                        r = await client.post("/track", json=body)
                    except httpx.TransportError:
                        return  # the process is gone
                    if r.status_code == 200:
                        acknowledged.append(message_id)
                        if len(acknowledged) == 40:
                            proc.send_signal(signal.SIGKILL)  # right after an acknowledgement

            await asyncio.gather(*(sender(n) for n in range(4)))
        stored = await _scalar(
            engine, "SELECT count(*) FROM events WHERE workspace_id = :w", w=keys.workspace_id
        )
        rows = await wait_for(lambda: _all_done(engine, flow_id, stored), timeout=90)
        assert worker.poll() is None, tail(worker_log)
    assert len(acknowledged) >= 40
    assert stored >= len(acknowledged)
    # Every acknowledged trigger (and every stored one caught mid-flight)
    # enrolled exactly one person once, and that enrollment completed.
    async with engine.connect() as conn:
        per_event = (
            await conn.execute(
                text(
                    "SELECT e.message_id, count(fe.id), bool_and(fe.status = 'completed') FROM events e "
                    "LEFT JOIN flow_enrollments fe ON fe.trigger_event_id = e.id AND fe.flow_id = :f "
                    "WHERE e.workspace_id = :w GROUP BY e.message_id"
                ),
                {"f": flow_id, "w": keys.workspace_id},
            )
        ).all()
    by_message = {m: (n, done) for m, n, done in per_event}
    assert set(acknowledged) <= set(by_message)
    assert all(v == (1, True) for v in by_message.values()), by_message
    assert len(rows) == stored
