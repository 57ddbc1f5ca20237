"""Graceful shutdown of a real `mp worker` process: SIGTERM while a send is
held by the provider lets that send finish, and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.temporal import WorkflowStart, start_workflow
from definitions import workflow_ids
from definitions.messages import SendEmailInput
from delivery import service
from delivery.schemas import MessageCreate, TemplateCreate
from tests.delivery.conftest import SENDER, add_sendgrid

ROOT = Path(__file__).resolve().parents[2]
HOLD = 2.0  # seconds the provider holds the request (its client times out at 3)


def _worker_env(settings, queue: str, shutdown_seconds: float) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_TASK_QUEUE": queue,
        "SECRET_KEY": settings.secret_key,
        "WORKER_SHUTDOWN_SECONDS": str(shutdown_seconds),
        "ALLOW_PRIVATE_PROVIDER_HOSTS": "true",  # the fake provider is on 127.0.0.1
    }


async def test_sigterm_lets_the_in_flight_send_finish(
    api, sendgrid, settings, temporal_client, sessionmaker, workspace, tmp_path
):
    await add_sendgrid(api, sendgrid)
    async with sessionmaker() as session, session.begin():
        template = await service.create_template(
            session,
            workspace.workspace_id,
            TemplateCreate(name="Bye", subject="Bye", html="<p>Bye</p>", from_email=SENDER),
        )
    async with sessionmaker() as session, session.begin():
        row, _ = await service.create_message(
            session, workspace.workspace_id, MessageCreate(template_id=template.id, email="bye@example.com")
        )
    queue = f"{settings.temporal_task_queue}-shutdown"
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once; waited on in a thread below
            [sys.executable, "-m", "cli", "worker"],
            cwd=ROOT,
            env=_worker_env(settings, queue, shutdown_seconds=30),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sendgrid.mode, sendgrid.delay = "slow", HOLD
    try:
        await start_workflow(
            temporal_client,
            WorkflowStart(
                "SendMessageWorkflow",
                SendEmailInput(workspace_id=workspace.workspace_id, message_id=row["id"]),
                id=workflow_ids.message(row["id"]),
            ),
            queue,
        )
        for _ in range(300):  # the worker process starts, polls and reaches the provider
            if sendgrid.requests:
                break
            await asyncio.sleep(0.1)
        assert sendgrid.requests == 1, "the worker never reached the provider"
        assert not sendgrid.received, "the provider answered before the worker was stopped"
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        stopped_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    output = log_path.read_text()
    assert code == 0, output
    # It waited for the provider's answer rather than cancelling the send.
    assert len(sendgrid.received) == 1
    assert stopped_after >= HOLD - 1.0, f"stopped after {stopped_after:.1f}s: {output}"
    message = (await api.get(f"/api/v1/messages/{row['id']}")).json()
    assert message["status"] == "sent", message
    assert "worker stopped" in output
