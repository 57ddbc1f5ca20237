"""The worker process: every workflow and activity of the platform, and
the dispatcher that wakes segment re-checks."""

from __future__ import annotations

import asyncio
import logging
import signal

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.worker import Worker

from activities.email import EmailActivities
from activities.partitions import PartitionActivities
from activities.segments import SegmentActivities
from core.clients import connect_temporal, create_redis
from core.runtime import tune_gc
from core.settings import Settings
from db.engine import create_engine
from delivery.limits import BreakerPolicy, ProviderLimits
from delivery.router import ProviderRouter
from delivery.sender import EmailSender
from worker.recheck_dispatcher import run_recheck_dispatcher

# Imported here, before any worker starts, so sandbox validation never
# races a first import (Python 3.11 import-lock issue).
from workflows.maintenance import EventPartitionsWorkflow
from workflows.messages import SendMessageWorkflow
from workflows.segments import SegmentRecheckWorkflow, SegmentRefreshDispatchWorkflow, SegmentRefreshWorkflow

log = logging.getLogger(__name__)

WORKFLOWS = [
    EventPartitionsWorkflow,
    SegmentRefreshWorkflow,
    SegmentRefreshDispatchWorkflow,
    SegmentRecheckWorkflow,
    SendMessageWorkflow,
]


def build_router(redis: aioredis.Redis, settings: Settings) -> ProviderRouter:
    """The provider router with breakers and buckets in Redis."""
    policy = BreakerPolicy(
        failure_threshold=settings.breaker_failure_threshold,
        window_seconds=settings.breaker_window_seconds,
        cooldown_seconds=settings.breaker_cooldown_seconds,
    )
    limits = ProviderLimits(redis, settings.redis_prefix, policy)
    return ProviderRouter(
        limits,
        max_rate_wait=settings.email_rate_wait_seconds,
        allow_private_hosts=settings.allow_private_provider_hosts,
    )


def build_activities(
    engine: AsyncEngine, redis: aioredis.Redis, settings: Settings, sender: EmailSender | None = None
) -> list:
    """Activity callables, bound to clients built once."""
    partitions = PartitionActivities(engine)
    segments = SegmentActivities(engine, redis, settings.redis_prefix)
    email = EmailActivities(sender or EmailSender(engine, build_router(redis, settings), settings))
    return [
        email.send_email,
        partitions.ensure_event_partitions,
        segments.refresh_segment,
        segments.due_segments,
        segments.recheck_profiles,
    ]


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Poll the task queue until `stop` is set (or SIGINT / SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # `mp worker` runs on POSIX, in the main thread
        loop.add_signal_handler(sig, stop.set)
    client = await connect_temporal(settings)
    engine = create_engine(settings.database_url, pool_size=5)
    redis = create_redis(settings)
    router = build_router(redis, settings)
    sender = EmailSender(engine, router, settings)
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(engine, redis, settings, sender=sender),
    )
    tune_gc(settings.gc_thresholds)
    log.info("worker polling %s on %s", settings.temporal_task_queue, settings.temporal_address)
    try:
        async with worker:
            await run_recheck_dispatcher(client, redis, settings, stop)
    finally:
        await sender.close()
        await router.close()
        await engine.dispose()
        await redis.aclose()
