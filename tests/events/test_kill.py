"""Kill -9 with real processes: tracking right after acknowledging, the
worker while it dispatches. Nothing acknowledged is lost from the outbox;
nothing is applied twice once another worker takes over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import text

from db.engine import create_engine, create_sessionmaker, driver_connection, session_scope
from db.migrate import upgrade
from definitions.maintenance import OutboxSweepInput, OutboxSweepResult
from events import writer as event_writer
from events.writer import ProfileChange
from segments import service as segment_service
from segments.schemas import SegmentCreate
from tests.support import services
from tests.support.outbox import OUTBOX_EVENTS, listen
from tests.support.servers import free_port
from workspaces.service import create_workspace_keys

ROOT = Path(__file__).resolve().parents[2]
HEARD = "Order Completed"


def _env(settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "SECRET_KEY": settings.secret_key,
        **extra,
    }


@contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _count(engine, sql: str, **params) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def test_tracking_killed_after_acknowledging_loses_no_outbox_row(settings, engine, workspace):
    ws = workspace.workspace_id
    await listen(engine, ws, "probe", events=[HEARD])
    port = free_port()
    acknowledged: list[str] = []
    with _process(["tracking"], _env(settings, TRACKING_PORT=str(port))) as proc:
        headers = {"Authorization": f"Bearer {workspace.public_key}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10
        ) as client:
            for _ in range(200):
                try:
                    await client.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)

            async def sender(n: int) -> None:
                for i in range(1000):
                    message_id = f"m-{n}-{i}"
                    body = {"userId": f"user-{i % 7}", "event": HEARD, "messageId": message_id}
                    try:
                        r = await client.post("/track", json=body)
                    except httpx.TransportError:
                        return  # the process is gone
                    if r.status_code == 200:
                        acknowledged.append(message_id)
                        if len(acknowledged) == 150:
                            proc.send_signal(signal.SIGKILL)  # right after an acknowledgement

            await asyncio.gather(*(sender(n) for n in range(4)))
    assert len(acknowledged) >= 150
    # Every acknowledged event is stored and announced; every stored event
    # (acknowledged or caught mid-flight) is announced exactly once.
    missing = await _count(
        engine,
        "SELECT count(*) FROM unnest(CAST(:ids AS text[])) AS m(id) WHERE NOT EXISTS ("
        f" SELECT 1 FROM events e JOIN ({OUTBOX_EVENTS}) o ON o.event_id = e.id AND o.consumer = 'probe'"
        " WHERE e.workspace_id = :w AND e.message_id = m.id)",
        ids=acknowledged,
        w=ws,
    )
    assert missing == 0
    stored = await _count(engine, "SELECT count(*) FROM events WHERE workspace_id = :w", w=ws)
    announced = await _count(
        engine,
        f"SELECT count(DISTINCT event_id) FROM ({OUTBOX_EVENTS}) o "
        "WHERE workspace_id = :w AND consumer = 'probe'",
        w=ws,
    )
    entries = await _count(
        engine, "SELECT sum(size) FROM outbox WHERE workspace_id = :w AND consumer = 'probe'", w=ws
    )
    assert stored == announced == entries >= len(acknowledged)


async def test_worker_killed_while_dispatching_loses_nothing_and_applies_once(
    pg_server, settings, temporal_client
):
    # A database of its own, so only the workers started here dispatch.
    url = await services.create_database(pg_server, "mp_kill")
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=2)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            keys = await create_workspace_keys(session, "kill-test")
            ws = keys.workspace_id
            definition = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
            await segment_service.create_segment(
                session, ws, SegmentCreate(name="Pro", definition=definition)
            )
        people = 400
        async with engine.begin() as conn:
            ids = [
                r[0]
                for r in await conn.execute(
                    text(
                        "INSERT INTO profiles (id, workspace_id, external_id, traits) "
                        "SELECT mp_uuid7(), :w, 'p' || n, '{\"plan\": \"pro\"}' "
                        "FROM generate_series(1, :n) n "
                        "RETURNING id"
                    ),
                    {"w": ws, "n": people},
                )
            ]
        # 40 statements of 10 changes: 40 outbox rows, one claim each (batch size 10).
        for start in range(0, people, 10):
            async with engine.begin() as conn:
                raw = await driver_connection(conn)
                changes = [ProfileChange(ws, pid, trait_keys=["plan"]) for pid in ids[start : start + 10]]
                await event_writer.write(raw, [], changes)
        assert await _count(engine, "SELECT count(*) FROM outbox") == people // 10
        assert await _count(engine, "SELECT sum(size) FROM outbox") == people

        queue = f"kill-{uuid.uuid4().hex[:8]}"
        env = _env(
            settings.model_copy(update={"database_url": url}),
            TEMPORAL_TASK_QUEUE=queue,
            OUTBOX_BATCH_SIZE="10",
            OUTBOX_LEASE_SECONDS="2",
        )
        with _process(["worker"], env) as doomed:
            for _ in range(600):
                left = await _count(
                    engine, "SELECT COALESCE(sum(size), 0) FROM outbox WHERE claimed_until IS NULL"
                )
                if left < people - 50:
                    break
                await asyncio.sleep(0.05)
            doomed.send_signal(signal.SIGKILL)  # mid-dispatch: some rows handed over, some claimed, some new
            doomed.wait(10)
        assert await _count(engine, "SELECT count(*) FROM outbox") > 0, "killed too late to test anything"

        with _process(["worker"], env):
            await asyncio.sleep(2.5)  # the dead worker's leases run out
            swept = await temporal_client.execute_workflow(
                "OutboxSweepWorkflow",
                OutboxSweepInput(),
                id=f"sweep-{queue}",
                task_queue=queue,
                result_type=OutboxSweepResult,
            )
            for _ in range(300):
                members = await _count(engine, "SELECT count(*) FROM segment_memberships")
                left = await _count(engine, "SELECT count(*) FROM outbox")
                if members == people and left == 0:
                    break
                await asyncio.sleep(0.2)
        assert left == 0 and members == people
        assert swept.redispatched >= 0
        # Applied once: each person entered the segment exactly once.
        twice = await _count(
            engine,
            "SELECT count(*) FROM (SELECT profile_id FROM events WHERE name = 'Segment Entered' "
            "GROUP BY profile_id HAVING count(*) <> 1) x",
        )
        entered = await _count(engine, "SELECT count(*) FROM events WHERE name = 'Segment Entered'")
        assert twice == 0 and entered == people
    finally:
        await engine.dispose()
        await services.drop_database(pg_server, url)
