"""Record the histories the replay test checks: real runs of every workflow
type, on a fresh Temporal dev server, PostgreSQL database and Redis prefix,
with the platform's own worker, API and tracking apps and a fake SendGrid.

    python -m tests.workflows.record_histories [--only NAME ...]

Writes `tests/workflows/histories/<name>.json` (one file per case, name
`<WorkflowType>-<case>`), overwriting those it records. Re-record a
workflow's histories only when its saved histories no longer describe runs
that can exist in production (see README, "Contributing").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from core.clients import create_redis
from core.settings import Settings
from core.temporal import WorkflowStart, start_workflow
from db.engine import create_engine, create_sessionmaker, session_scope
from db.migrate import upgrade
from definitions import workflow_ids
from definitions.analytics import RollupInput
from definitions.flow_runs import DateTriggersInput
from definitions.maintenance import EnsurePartitionsInput, OutboxSweepInput
from definitions.messages import SendEmailInput
from definitions.segment_runs import DueSegmentsInput
from tests.support import services
from tests.support.fake_providers import FakeHTTPProvider
from tests.support.servers import serve
from workspaces.service import create_workspace_keys

HISTORIES = Path(__file__).resolve().parent / "histories"
# Recorded as the identity of every event, instead of pid@hostname.
IDENTITY = "history-recorder"
PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}


@dataclass
class Stack:
    """What a recording talks to."""

    settings: Settings
    client: Client
    api: httpx.AsyncClient
    tracking: httpx.AsyncClient
    workspace_id: uuid.UUID
    sendgrid: FakeHTTPProvider
    engine: AsyncEngine
    sessionmaker: async_sessionmaker
    template_id: str | None = None
    cart_flow_id: uuid.UUID | None = None

    @property
    def queue(self) -> str:
        return self.settings.temporal_task_queue


async def _completed_activities(handle: WorkflowHandle) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the workflow did not get there in time")


# -- one function per case: run the workflow, return its handle -------------------


async def event_partitions(stack: Stack) -> WorkflowHandle:
    handle = await start_workflow(
        stack.client,
        WorkflowStart(
            "EventPartitionsWorkflow",
            EnsurePartitionsInput(months_ahead=3),
            id=workflow_ids.event_partitions(),
        ),
        stack.queue,
    )
    await handle.result()
    return handle


async def segment_refresh(stack: Stack) -> WorkflowHandle:
    batch = [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "free"}},
    ]
    assert (await stack.tracking.post("/track/batch", json={"batch": batch})).status_code == 200
    seg = (await stack.api.post("/api/v1/segments", json={"name": "Pro", "definition": PRO})).json()
    run = await stack.api.post(f"/api/v1/segments/{seg['id']}/recalculate", params={"wait": 30})
    assert run.json()["status"] == "completed", run.text
    return stack.client.get_workflow_handle(run.json()["workflow_id"])


async def segment_refresh_dispatch(stack: Stack) -> WorkflowHandle:
    # Two segments never computed: the dispatch starts a refresh child for each.
    for name in ("Due A", "Due B"):
        r = await stack.api.post("/api/v1/segments", json={"name": name, "definition": PRO})
        assert r.status_code == 201, r.text
    handle = await start_workflow(
        stack.client,
        WorkflowStart(
            "SegmentRefreshDispatchWorkflow",
            DueSegmentsInput(limit=100),
            id=workflow_ids.segment_refresh_dispatch(),
            result_type=int,
        ),
        stack.queue,
    )
    assert await handle.result() >= 2
    return handle


async def segment_recheck(stack: Stack) -> WorkflowHandle:
    # The real path: trait changes a segment reads go through the outbox,
    # and the dispatcher signals-with-start the workspace's re-check
    # workflow; a second change signals the running one. Still running (it
    # idles for minutes) when its history is read.
    r = await stack.api.post("/api/v1/segments", json={"name": "Re-checked", "definition": PRO})
    assert r.status_code == 201, r.text
    handle = stack.client.get_workflow_handle(workflow_ids.segment_recheck(stack.workspace_id))
    for n, plan in enumerate(("free", "pro"), start=1):
        batch = [{"type": "identify", "userId": "cat", "traits": {"plan": plan}}]
        assert (await stack.tracking.post("/track/batch", json={"batch": batch})).status_code == 200
        await _until(lambda n=n: _has_activities(handle, n))
    return handle


async def outbox_sweep(stack: Stack) -> WorkflowHandle:
    handle = await start_workflow(
        stack.client,
        WorkflowStart(
            "OutboxSweepWorkflow",
            OutboxSweepInput(max_batches=10),
            id=workflow_ids.outbox_sweep(),
        ),
        stack.queue,
    )
    await handle.result()
    return handle


async def analytics_rollup(stack: Stack) -> WorkflowHandle:
    batch = [{"userId": "dee", "event": "Signed Up"}, {"userId": "dee", "event": "Order Completed"}]
    assert (await stack.tracking.post("/track/batch", json={"batch": batch})).status_code == 200
    handle = await start_workflow(
        stack.client,
        WorkflowStart(
            "AnalyticsRollupWorkflow",
            RollupInput(lag_seconds=0),
            id=workflow_ids.analytics_rollup(),
        ),
        stack.queue,
    )
    await handle.result()
    return handle


async def _has_activities(handle: WorkflowHandle, n: int) -> bool:
    try:
        return await _completed_activities(handle) >= n
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # not started yet
            return False
        raise


async def _template_id(stack: Stack) -> str:
    """A provider (the fake SendGrid) and a template, made once per recording."""
    if stack.template_id is None:
        provider = {
            "name": "sendgrid",
            "kind": "sendgrid",
            "priority": 10,
            "settings": {"base_url": stack.sendgrid.base_url, "timeout": 3},
            "credentials": {"api_key": stack.sendgrid.token},
        }
        assert (await stack.api.post("/api/v1/providers", json=provider)).status_code == 201
        template = {
            "name": "Welcome",
            "subject": "Hi {{ profile.first_name }}",
            "from_email": "sender@example.com",
            "html": "<p>Hello</p>",
        }
        stack.template_id = (await stack.api.post("/api/v1/templates", json=template)).json()["id"]
    return stack.template_id


async def send_message_sent(stack: Stack) -> WorkflowHandle:
    r = await stack.api.post(
        "/api/v1/messages",
        params={"wait": 20},
        json={"template_id": await _template_id(stack), "email": "ann@example.com"},
    )
    assert r.json()["status"] == "sent", r.text
    return stack.client.get_workflow_handle(r.json()["workflow_id"])


def _cart_flow(template_id: str) -> dict:
    """Abandoned cart: wait 3 s for the order; if none, an email, then a
    4 s grace wait in which buying still converts."""
    return {
        "trigger": {"type": "event", "name": "Cart Updated", "enrollment_key": "properties.cart_id"},
        "start": "wait_buy",
        "nodes": [
            {"id": "wait_buy", "type": "wait_for_event", "name": "Order Completed", "match_key": True,
             "timeout_seconds": 3, "on_event": "bought", "on_timeout": "remind"},
            {"id": "remind", "type": "send_email", "template_id": template_id, "next": "grace"},
            {"id": "grace", "type": "wait", "seconds": 4, "next": "done"},
            {"id": "done", "type": "exit"},
            {"id": "bought", "type": "exit"},
        ],
        "settings": {"reentry": "always", "goal": {"name": "Order Completed"}},
    }  # fmt: skip


async def _cart_run(stack: Stack, cart: str, buy: bool) -> WorkflowHandle:
    """Put a cart in the abandoned-cart flow through tracking; buy it at
    once or not; return the run once it ended."""
    from tests.flows.support import active_flow, enrollments, wait_for

    if stack.cart_flow_id is None:
        stack.cart_flow_id = await active_flow(
            stack.sessionmaker, stack.workspace_id, _cart_flow(await _template_id(stack)), name="Cart"
        )
    who = {"userId": "shopper", "traits": {"email": "shopper@example.com"}}
    assert (await stack.tracking.post("/identify", json=who)).status_code == 200
    event = {"userId": "shopper", "event": "Cart Updated", "properties": {"cart_id": cart}}
    assert (await stack.tracking.post("/track", json=event)).status_code == 200

    async def enrolled() -> dict | None:
        rows = [r for r in await enrollments(stack.engine, stack.cart_flow_id) if r["enrollment_key"] == cart]
        return rows[0] if rows else None

    row = await wait_for(enrolled)
    if buy:
        order = {"userId": "shopper", "event": "Order Completed", "properties": {"cart_id": cart}}
        assert (await stack.tracking.post("/track", json=order)).status_code == 200
    handle = stack.client.get_workflow_handle(row["workflow_id"])
    await asyncio.wait_for(handle.result(), timeout=60)
    return handle


async def flow_cart_bought(stack: Stack) -> WorkflowHandle:
    return await _cart_run(stack, "bought", buy=True)


async def flow_cart_reminded(stack: Stack) -> WorkflowHandle:
    return await _cart_run(stack, "reminded", buy=False)


async def flow_welcome_series(stack: Stack) -> WorkflowHandle:
    """Welcome series: an email, a 2 s wait, a branch on having opened it
    (not opened here), the second email."""
    from tests.flows.support import active_flow, enrollments, wait_for

    template_id = await _template_id(stack)
    definition = {
        "trigger": {"type": "event", "name": "Signed Up"},
        "start": "welcome",
        "nodes": [
            {"id": "welcome", "type": "send_email", "template_id": template_id, "next": "pause"},
            {"id": "pause", "type": "wait", "seconds": 2, "next": "check"},
            {"id": "check", "type": "branch", "otherwise": "nudge",
             "branches": [{"condition": {"type": "email", "action": "opened"}, "next": "thanks"}]},
            {"id": "thanks", "type": "send_email", "template_id": template_id},
            {"id": "nudge", "type": "send_email", "template_id": template_id},
        ],
        "settings": {"quiet_hours": {"start": "03:00", "end": "03:01"}},
    }  # fmt: skip
    flow_id = await active_flow(stack.sessionmaker, stack.workspace_id, definition, name="Welcome")
    who = {"userId": "newcomer", "traits": {"email": "newcomer@example.com"}}
    assert (await stack.tracking.post("/identify", json=who)).status_code == 200
    event = {"userId": "newcomer", "event": "Signed Up"}
    assert (await stack.tracking.post("/track", json=event)).status_code == 200
    [row] = await wait_for(lambda: enrollments(stack.engine, flow_id))
    handle = stack.client.get_workflow_handle(row["workflow_id"])
    await asyncio.wait_for(handle.result(), timeout=60)
    return handle


async def flow_date_triggers(stack: Stack) -> WorkflowHandle:
    handle = await start_workflow(
        stack.client,
        WorkflowStart("FlowDateTriggersWorkflow", DateTriggersInput(), id=workflow_ids.flow_date_triggers()),
        stack.queue,
    )
    await handle.result()
    return handle


async def send_message_missing(stack: Stack) -> WorkflowHandle:
    # No such message row: the activity fails once, non-retryable, and so does the workflow.
    message_id = uuid.uuid4()
    handle = await start_workflow(
        stack.client,
        WorkflowStart(
            "SendMessageWorkflow",
            SendEmailInput(workspace_id=stack.workspace_id, message_id=message_id),
            id=workflow_ids.message(message_id),
        ),
        stack.queue,
    )
    try:
        await handle.result()
    except WorkflowFailureError:
        return handle
    raise AssertionError("a send of a missing message succeeded")


async def _campaign(stack: Stack, name: str, **extra: Any) -> str:
    """A draft campaign to the `Pro` people (three of them, made here)."""
    batch = [
        {"type": "identify", "userId": f"pro-{i}", "traits": {"plan": "pro", "email": f"pro-{i}@example.com"}}
        for i in range(3)
    ]
    assert (await stack.tracking.post("/track/batch", json={"batch": batch})).status_code == 200
    await _template_id(stack)  # the provider
    seg = await stack.api.post("/api/v1/segments", json={"name": f"Pro for {name}", "definition": PRO})
    body = {
        "name": name,
        "content": {
            "subject": "Hi {{ profile.plan }}",
            "html": "<p>Sale</p>",
            "from_email": "sender@example.com",
        },
        "audience": {"segment_ids": [seg.json()["id"]]},
    } | extra
    r = await stack.api.post("/api/v1/campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def campaign_sent(stack: Stack) -> WorkflowHandle:
    # Batches of two (the recording's settings): two batches, one window.
    campaign_id = await _campaign(stack, "Sent")
    r = await stack.api.post(f"/api/v1/campaigns/{campaign_id}/send")
    assert r.status_code == 202, r.text
    handle = stack.client.get_workflow_handle(workflow_ids.campaign(campaign_id))
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result["status"] == "sent" and result["sent"] == 3, result
    return handle


async def campaign_cancelled_before_its_time(stack: Stack) -> WorkflowHandle:
    from datetime import UTC, datetime, timedelta

    campaign_id = await _campaign(stack, "Cancelled")
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await stack.api.post(f"/api/v1/campaigns/{campaign_id}/schedule", json={"scheduled_at": at})
    assert r.status_code == 202, r.text
    handle = stack.client.get_workflow_handle(workflow_ids.campaign(campaign_id))
    await _until(lambda: _has_activities(handle, 1))
    assert (await stack.api.post(f"/api/v1/campaigns/{campaign_id}/cancel")).status_code == 202
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result["status"] == "cancelled", result
    return handle


async def campaign_ab_test(stack: Stack) -> WorkflowHandle:
    from datetime import timedelta

    from temporalio.testing import TimeSkipper

    # Two variants to 34 % of three people (one each), a minute's wait
    # skipped on the run's virtual clock, then the winner to the third.
    ab_test = {
        "variants": [{"name": "A", "subject": "A {{ profile.plan }}"}, {"name": "B", "subject": "B"}],
        "test_percent": 34,
        "wait_seconds": 60,
        "metric": "open_rate",
    }
    campaign_id = await _campaign(stack, "A/B", ab_test=ab_test)
    r = await stack.api.post(f"/api/v1/campaigns/{campaign_id}/send")
    assert r.status_code == 202, r.text
    handle = stack.client.get_workflow_handle(workflow_ids.campaign(campaign_id))

    async def waiting() -> bool:
        history = await handle.fetch_history()
        return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)

    await _until(waiting)
    await TimeSkipper(stack.client).fast_forward(handle, timedelta(seconds=60))
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result["status"] == "sent" and result["sent"] == 3 and result["winner"] == 0, result
    return handle


CASES: dict[str, Callable[[Stack], Awaitable[WorkflowHandle]]] = {
    "EventPartitionsWorkflow-ensure": event_partitions,
    "SegmentRefreshWorkflow-recalculate": segment_refresh,
    "SegmentRefreshDispatchWorkflow-two-due": segment_refresh_dispatch,
    "SegmentRecheckWorkflow-two-changes": segment_recheck,
    "OutboxSweepWorkflow-nothing-stuck": outbox_sweep,
    "SendMessageWorkflow-sent": send_message_sent,
    "SendMessageWorkflow-missing-message": send_message_missing,
    "FlowRunWorkflow-cart-bought": flow_cart_bought,
    "FlowRunWorkflow-cart-reminded": flow_cart_reminded,
    "FlowRunWorkflow-welcome-series": flow_welcome_series,
    "FlowDateTriggersWorkflow-nothing-due": flow_date_triggers,
    "AnalyticsRollupWorkflow-two-events": analytics_rollup,
    "CampaignSendWorkflow-sent": campaign_sent,
    "CampaignSendWorkflow-cancelled-before-its-time": campaign_cancelled_before_its_time,
    "CampaignSendWorkflow-ab-test": campaign_ab_test,
}


async def record(pg: str, redis_url: str, address: str, only: set[str] | None = None) -> list[Path]:
    """Run the cases (all, or those named) against these servers and write their histories."""
    from api.app import create_app as create_api
    from delivery.sender import EmailSender
    from tracking.app import create_app as create_tracking
    from worker.main import WorkerClients, background_loops, build_worker
    from worker.registry import build_activities, build_dispatcher, build_router

    written: list[Path] = []
    database_url = await services.create_database(pg, prefix="mp_record")
    try:
        await asyncio.to_thread(upgrade, database_url)
        run = uuid.uuid4().hex[:8]
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=f"mp_record_{run}:",
            temporal_address=address,
            temporal_task_queue="record",
            secret_key="record-secret",
            allow_private_provider_hosts=True,  # the fake SendGrid listens on 127.0.0.1
            campaign_batch_size=2,
        )
        client = await Client.connect(address, data_converter=pydantic_data_converter, identity=IDENTITY)
        engine = create_engine(settings.database_url, pool_size=5)
        redis = create_redis(settings)
        router = build_router(redis, settings)
        sender = EmailSender(engine, router, settings)
        dispatcher = build_dispatcher(engine, client, settings)
        async with AsyncExitStack() as stack_ctx:
            keys = await _workspace(engine)
            sendgrid = FakeHTTPProvider(token="SG.record")
            sendgrid.base_url = await stack_ctx.enter_async_context(serve(sendgrid.app()))
            api_url = await stack_ctx.enter_async_context(serve(create_api(settings)))
            tracking_url = await stack_ctx.enter_async_context(serve(create_tracking(settings)))
            api = await stack_ctx.enter_async_context(
                httpx.AsyncClient(
                    base_url=api_url, headers={"Authorization": f"Bearer {keys.secret_key}"}, timeout=60
                )
            )
            tracking = await stack_ctx.enter_async_context(
                httpx.AsyncClient(
                    base_url=tracking_url,
                    headers={"Authorization": f"Bearer {keys.public_key}"},
                    timeout=60,
                )
            )
            await stack_ctx.enter_async_context(
                build_worker(
                    client, settings, build_activities(engine, redis, settings, dispatcher, sender=sender)
                )
            )
            stop = asyncio.Event()
            loops = [
                asyncio.create_task(c)
                for c in background_loops(WorkerClients(client, engine, redis, settings, dispatcher), stop)
            ]
            stack = Stack(
                settings,
                client,
                api,
                tracking,
                keys.workspace_id,
                sendgrid,
                engine,
                create_sessionmaker(engine),
            )
            try:
                for name, case in CASES.items():
                    if only and name not in only:
                        continue
                    handle = await case(stack)
                    history = await handle.fetch_history()
                    path = HISTORIES / f"{name}.json"
                    path.write_text(json.dumps(_scrubbed(json.loads(history.to_json())), indent=1) + "\n")
                    written.append(path)
                    print(f"recorded {path.name}: {len(history.events)} events")
            finally:
                stop.set()
                await asyncio.gather(*loops)
                sendgrid.release()
        await sender.close()
        await router.close()
        leftovers = [key async for key in redis.scan_iter(f"{settings.redis_prefix}*")]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
        await engine.dispose()
    finally:
        await services.drop_database(pg, database_url)
    return written


def _scrubbed(node: Any) -> Any:
    """The history without traces of the recording machine: every `identity`
    (pid@hostname of whoever acted) made the same, stack traces (file paths)
    emptied. Replay reads neither."""
    if isinstance(node, dict):
        return {
            k: IDENTITY if k == "identity" else "" if k == "stackTrace" else _scrubbed(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_scrubbed(v) for v in node]
    return node


async def _workspace(engine):
    async with session_scope(create_sessionmaker(engine)) as session:
        return await create_workspace_keys(session, f"record-{uuid.uuid4().hex[:8]}")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="record only these cases")
    args = parser.parse_args()
    HISTORIES.mkdir(exist_ok=True)
    with (
        services.postgres_server() as pg,
        services.redis_server() as redis_url,
        services.temporal_server() as address,
    ):
        asyncio.run(record(pg, redis_url, address, set(args.only) if args.only else None))


if __name__ == "__main__":
    main()
