"""The worker process: every workflow and activity of the platform."""

from __future__ import annotations

import asyncio
import logging
import signal

from temporalio.worker import Worker

from activities.partitions import PartitionActivities
from core.clients import connect_temporal
from core.settings import Settings
from db.engine import create_engine

# Imported here, before any worker starts, so sandbox validation never
# races a first import (Python 3.11 import-lock issue).
from workflows.maintenance import EventPartitionsWorkflow

log = logging.getLogger(__name__)

WORKFLOWS = [EventPartitionsWorkflow]


def build_activities(engine) -> list:  # noqa: ANN001 - engine is an AsyncEngine
    """Activity callables, bound to clients built once."""
    partitions = PartitionActivities(engine)
    return [partitions.ensure_event_partitions]


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Poll the task queue until `stop` is set (or SIGINT / SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    client = await connect_temporal(settings)
    engine = create_engine(settings.database_url, pool_size=5)
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(engine),
    )
    log.info("worker polling %s on %s", settings.temporal_task_queue, settings.temporal_address)
    try:
        async with worker:
            await stop.wait()
    finally:
        await engine.dispose()
