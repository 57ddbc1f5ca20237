"""The worker process: every workflow and activity of the platform (from
`worker.registry`) and its background loops (the outbox dispatcher that
hands announced events to workflows), in one task group.

Shutdown is graceful: on SIGINT/SIGTERM the worker stops polling, lets
in-flight activities finish for up to `worker_shutdown_seconds` (then
cancels them; Temporal retries them elsewhere), stops the loops, and only
then closes its clients.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

import workflows
from core.clients import connect_temporal, create_redis
from core.runtime import keep_bytecode, tune_gc
from core.settings import Settings
from db.engine import create_engine
from delivery.sender import EmailSender
from events.dispatcher import OutboxDispatcher
from worker.registry import WORKFLOWS, build_activities, build_dispatcher, build_router

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerClients:
    """The clients a background loop may need, built once per process."""

    temporal: Client
    engine: AsyncEngine
    redis: aioredis.Redis
    settings: Settings
    dispatcher: OutboxDispatcher


def background_loops(clients: WorkerClients, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
    """The loops that run beside the worker until `stop` is set; adding one is one line."""
    return [
        clients.dispatcher.run(stop, clients.settings.outbox_poll_seconds),
    ]


def build_worker(client: Client, settings: Settings, activities: list[Any]) -> Worker:
    """The Temporal worker polling the platform's task queue."""
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_seconds),
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Poll the task queue until `stop` is set (or SIGINT / SIGTERM), then shut down gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # `mp worker` runs on POSIX, in the main thread
        loop.add_signal_handler(sig, stop.set)
    client = await connect_temporal(settings)
    engine = create_engine(settings.database_url, pool_size=settings.worker_db_pool_size)
    redis = create_redis(settings)
    router = build_router(redis, settings)
    sender = EmailSender(engine, router, settings)
    http = httpx.AsyncClient()  # flow webhooks: each call passes its node's timeout
    dispatcher = build_dispatcher(engine, client, settings)
    activities = build_activities(engine, redis, settings, dispatcher, sender=sender, http=http)
    worker = build_worker(client, settings, activities)
    clients = WorkerClients(client, engine, redis, settings, dispatcher)
    tune_gc(settings.gc_thresholds)
    keep_bytecode(Path(workflows.__file__).parent)
    log.info("worker polling %s on %s", settings.temporal_task_queue, settings.temporal_address)

    async def shutdown_on_stop() -> None:
        await stop.wait()
        log.info(
            "worker stopping: letting in-flight activities finish (%ss at most)",
            settings.worker_shutdown_seconds,
        )
        await worker.shutdown()  # stops polling, waits for activities, then `worker.run()` returns

    try:
        # A loop or the worker failing cancels the rest and propagates.
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run(), name="temporal-worker")
            group.create_task(shutdown_on_stop(), name="worker-shutdown")
            for background in background_loops(clients, stop):
                group.create_task(background)
    finally:
        stop.set()
        await sender.close()
        await router.close()
        await http.aclose()
        await engine.dispose()
        await redis.aclose()
        log.info("worker stopped")
