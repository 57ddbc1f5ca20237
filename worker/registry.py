"""What the worker registers: every workflow and activity, gathered from
the lists each domain exports (`workflows.<domain>.WORKFLOWS`,
`activities.<domain>.build(...)`). The worker process and the tests both
register from here; a new domain adds one line to each list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from activities import analytics as analytics_activities
from activities import campaigns as campaign_activities
from activities import email as email_activities
from activities import flows as flow_activities
from activities import outbox as outbox_activities
from activities import partitions as partition_activities
from activities import segments as segment_activities
from core.settings import Settings
from definitions.events import Consumer
from delivery.limits import BreakerPolicy, ProviderLimits
from delivery.router import ProviderRouter
from delivery.sender import EmailSender
from events.dispatcher import OutboxDispatcher
from flows.consumer import FlowConsumer
from segments.outbox import recheck_deliveries

# Imported here, before any worker starts, so sandbox validation never
# races a first import (Python 3.11 import-lock issue).
from workflows import analytics, campaigns, flow_dates, flows, maintenance, messages
from workflows import segments as segment_workflows

WORKFLOWS: list[type] = [
    *maintenance.WORKFLOWS,
    *flows.WORKFLOWS,
    *flow_dates.WORKFLOWS,
    *segment_workflows.WORKFLOWS,
    *messages.WORKFLOWS,
    *analytics.WORKFLOWS,
    *campaigns.WORKFLOWS,
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


def build_dispatcher(engine: AsyncEngine, client: Client, settings: Settings) -> OutboxDispatcher:
    """The outbox dispatcher with every consumer the platform runs (one line per consumer)."""
    return OutboxDispatcher(
        engine,
        client,
        settings.temporal_task_queue,
        {Consumer.SEGMENTS: recheck_deliveries, Consumer.FLOWS: FlowConsumer(engine)},
        batch_size=settings.outbox_batch_size,
        lease_seconds=settings.outbox_lease_seconds,
        concurrency=settings.outbox_dispatch_concurrency,
    )


def build_activities(
    engine: AsyncEngine,
    redis: aioredis.Redis,
    settings: Settings,
    dispatcher: OutboxDispatcher,
    sender: EmailSender | None = None,
    http: httpx.AsyncClient | None = None,
) -> list[Callable[..., Any]]:
    """Every activity, bound to clients built once. Without `sender` or
    `http`, they are built here (and never closed: fine for tests, not for
    the worker process, which passes its own)."""
    sender = sender or EmailSender(engine, build_router(redis, settings), settings)
    return [
        *partition_activities.build(engine),
        *outbox_activities.build(dispatcher),
        *segment_activities.build(engine),
        *flow_activities.build(engine, settings, http or httpx.AsyncClient()),
        *email_activities.build(sender),
        *analytics_activities.build(engine),
        *campaign_activities.build(engine, sender),
    ]
