"""The one way to start or signal a workflow (core/temporal.py): start-or-join
on a deterministic id, signal-with-start in batches with per-item outcomes,
and a Temporal outage answered as ServiceUnavailable (503 + Retry-After)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError
from temporalio.worker import Worker

from api.app import create_app
from core.errors import ServiceUnavailable
from core.temporal import (
    WorkflowStart,
    signal_with_start_many,
    signal_workflow,
    start_or_join,
    start_workflow,
)
from definitions import workflow_ids
from definitions.search_attributes import WORKSPACE_ID
from tests.support import services
from tests.support.servers import free_port, serve
from tests.workflows.sample_workflows import SignalCollector


@pytest.fixture
async def collector_queue(temporal_client, settings):
    """A task queue served by a worker that runs only `SignalCollector`."""
    queue = f"{settings.temporal_task_queue}-starts-{uuid.uuid4().hex[:6]}"
    async with Worker(temporal_client, task_queue=queue, workflows=[SignalCollector]):
        yield queue


def _collect(workflow_id: str, value: int | None = None, **extra) -> WorkflowStart:
    signal = {"start_signal": "add", "start_signal_args": [value]} if value is not None else {}
    return WorkflowStart(SignalCollector.run, workflow_id, id=workflow_id, **signal, **extra)


async def test_a_second_start_joins_the_running_workflow(temporal_client, collector_queue):
    workflow_id = f"test-join-{uuid.uuid4()}"
    first = await start_workflow(temporal_client, _collect(workflow_id), collector_queue)
    second = await start_workflow(temporal_client, _collect(workflow_id), collector_queue)
    assert second.id == first.id
    assert (await second.describe()).run_id == first.result_run_id
    await first.signal(SignalCollector.finish)
    assert await asyncio.wait_for(second.result(), 30) == []


async def test_start_or_join_says_which(temporal_client, collector_queue):
    workflow_id = f"test-which-{uuid.uuid4()}"
    first = await start_or_join(temporal_client, _collect(workflow_id), collector_queue)
    again = await start_or_join(temporal_client, _collect(workflow_id), collector_queue)
    assert (first.started, again.started) == (True, False)
    await first.handle.signal(SignalCollector.finish)
    await asyncio.wait_for(first.handle.result(), 30)


async def test_signal_workflow_reaches_an_open_run_and_never_starts_one(temporal_client, collector_queue):
    workflow_id = f"test-signal-{uuid.uuid4()}"
    assert await signal_workflow(temporal_client, workflow_id, "add", 1) is False  # nothing open
    handle = await start_workflow(temporal_client, _collect(workflow_id), collector_queue)
    assert await signal_workflow(temporal_client, workflow_id, "add", 7) is True
    await handle.signal(SignalCollector.finish)
    assert await asyncio.wait_for(handle.result(), 30) == [7]
    await asyncio.sleep(0)  # the run ended: a late signal is dropped, not an error
    assert await signal_workflow(temporal_client, workflow_id, "add", 8) is False


async def test_signal_with_start_many_reports_each_item(temporal_client, collector_queue):
    ids = [f"test-batch-{uuid.uuid4()}" for _ in range(3)]
    unknown_attribute = SearchAttributeKey.for_keyword("NotRegisteredHere")
    # Items 1 and 3 share an id and run concurrently: either may be the one
    # that starts the run, so both carry its search attributes.
    tagged = {WORKSPACE_ID: uuid.uuid4()}
    starts = [
        _collect(ids[0], 1, search_attributes=tagged),
        _collect(ids[1], 2),
        _collect(ids[0], 3, search_attributes=tagged),  # same id: signals the run the other one started
        _collect(ids[2], 4, search_attributes={unknown_attribute: "x"}),  # rejected by Temporal
    ]
    # A generous timeout: the suite's shared dev server can be slow under load.
    outcomes = await signal_with_start_many(
        temporal_client, starts, collector_queue, concurrency=2, timeout=20
    )
    assert [o.ok for o in outcomes] == [True, True, True, False], [repr(o.error) for o in outcomes]
    assert [o.start for o in outcomes] == starts
    # A bad request is reported as what it is, not as an outage.
    assert isinstance(outcomes[3].error, RPCError) and not isinstance(outcomes[3].error, ServiceUnavailable)
    results = {}
    for workflow_id in ids[:2]:
        handle = temporal_client.get_workflow_handle(workflow_id, result_type=list[int])
        await handle.signal(SignalCollector.finish)
        results[workflow_id] = await asyncio.wait_for(handle.result(), 30)
    assert sorted(results[ids[0]]) == [1, 3] and results[ids[1]] == [2]
    description = await temporal_client.get_workflow_handle(ids[0]).describe()
    assert description.typed_search_attributes.get(WORKSPACE_ID) is not None


async def test_a_temporal_outage_is_service_unavailable_within_the_timeout():
    server = services.temporal_server()  # a server of its own, to stop under a connected client
    address = await asyncio.to_thread(server.__enter__)  # it waits for the server synchronously
    try:
        client = await Client.connect(address)
        live = await start_workflow(client, _collect(f"test-outage-{uuid.uuid4()}"), "nobody-polls")
        assert live.id
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
    # The server is gone now; the client was connected to it.
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as raised:
        await start_workflow(client, _collect(f"test-outage-{uuid.uuid4()}"), "nobody-polls", timeout=2)
    assert time.monotonic() - started < 5
    assert raised.value.status_code == 503 and raised.value.headers() == {"Retry-After": "5"}


async def test_a_batch_during_an_outage_reports_every_item_unavailable():
    client = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)  # nothing listens there
    starts = [_collect(workflow_ids.segment_recheck(uuid.uuid4()), 1) for _ in range(3)]
    outcomes = await signal_with_start_many(client, starts, "nobody-polls", timeout=2)
    assert [type(o.error) for o in outcomes] == [ServiceUnavailable] * 3


async def test_api_answers_503_with_retry_after_when_temporal_is_down(settings, workspace):
    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    app = create_app(down)
    headers = {"Authorization": f"Bearer {workspace.secret_key}"}
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as api:
        r = await api.post(
            "/api/v1/messages", json={"template_id": str(uuid.uuid4()), "email": "a@example.com"}
        )
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"] == "unavailable"
