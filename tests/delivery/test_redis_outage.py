"""A send requested while Redis (breakers and rate limits) is down waits
and goes out exactly once when Redis is back: it never ends `unknown`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from temporalio.worker import Worker

from cli import embedded
from definitions.messages import SendEmailInput, SendEmailResult
from delivery import service
from delivery.schemas import MessageCreate
from tests.delivery.conftest import add_sendgrid, make_template
from tests.support.servers import free_port


def _redis(data_dir: Path, port: int) -> embedded.Child:
    child = embedded.redis_child(data_dir, port)
    child.start()
    embedded.wait_for_port(child, port, 30)
    return child


async def _message(api, message_id) -> dict:
    return (await api.get(f"/api/v1/messages/{message_id}")).json()


@pytest.mark.timeout(180)
async def test_send_during_redis_outage_goes_out_once_when_redis_returns(
    api, sendgrid, settings, temporal_client, engine, sessionmaker, workspace, tmp_path, dispatcher
):
    from worker.registry import WORKFLOWS, build_activities

    (tmp_path / "logs").mkdir()
    port = free_port()
    redis_proc = _redis(tmp_path, port)
    own_redis = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=5, socket_connect_timeout=5)
    await add_sendgrid(api, sendgrid, rate_limit=50)  # breaker and bucket both in Redis
    template = await make_template(api)
    # The API may answer 201 just before its commit (issue 8, read-your-writes).
    for _ in range(50):
        if (await api.get(f"/api/v1/templates/{template['id']}")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    async with sessionmaker() as session, session.begin():
        row, _ = await service.create_message(
            session,
            workspace.workspace_id,
            MessageCreate(template_id=template["id"], email="outage@example.com"),
        )
    queue = f"{settings.temporal_task_queue}-redis-outage-{uuid.uuid4().hex[:6]}"
    try:
        async with Worker(
            temporal_client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=build_activities(engine, own_redis, settings, dispatcher),
        ):
            redis_proc.stop()
            assert not embedded.port_open(port)
            handle = await temporal_client.start_workflow(
                "SendMessageWorkflow",
                SendEmailInput(
                    workspace_id=workspace.workspace_id, message_id=row["id"], heartbeat_seconds=5
                ),
                id=f"message:{row['id']}",
                task_queue=queue,
                result_type=SendEmailResult,
            )
            # Wait until the send has been tried and retried while Redis is down.
            for _ in range(200):
                pending = (await handle.describe()).raw_description.pending_activities
                if pending and pending[0].attempt >= 2:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the send activity was not retried during the outage")
            waiting = await _message(api, row["id"])
            assert waiting["status"] == "queued" and "Redis is unreachable" in waiting["error"], waiting
            assert sendgrid.requests == 0, "a provider was called while Redis was down"
            assert "Redis is unreachable" in pending[0].last_failure.message

            redis_proc = _redis(tmp_path, port)  # same port, same data dir
            result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        redis_proc.stop()
        await own_redis.aclose()
    assert result.status == "sent", result
    assert len(sendgrid.received) == 1 and sendgrid.requests == 1
    assert sendgrid.received[0]["personalizations"][0]["to"] == [{"email": "outage@example.com"}]
    sent = await _message(api, row["id"])
    assert sent["status"] == "sent" and sent["error"] is None, sent
