"""Wakes the per-workspace `SegmentRecheckWorkflow` when tracking queued
profiles: every half second it takes the workspaces marked dirty in Redis
and signals (or starts) their workflow. Runs inside the worker process;
losing a wake-up only delays a re-check to the next scheduled refresh."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from temporalio.client import Client

from core.settings import Settings
from core.temporal import WorkflowStart, start_workflow
from definitions import workflow_ids
from definitions.search_attributes import WORKSPACE_ID
from definitions.segment_runs import RecheckInput
from segments.recheck import pop_dirty_workspaces
from workflows.segments import SegmentRecheckWorkflow

log = logging.getLogger(__name__)


async def wake_rechecks(client: Client, redis: aioredis.Redis, settings: Settings) -> int:
    """One pass: signal-with-start the workflow of each dirty workspace."""
    woken = 0
    for workspace_id in await pop_dirty_workspaces(redis, settings.redis_prefix):
        start = WorkflowStart(
            SegmentRecheckWorkflow.run,
            RecheckInput(workspace_id=workspace_id),
            id=workflow_ids.segment_recheck(workspace_id),
            start_signal="wake",
            search_attributes={WORKSPACE_ID: workspace_id},
        )
        await start_workflow(client, start, settings.temporal_task_queue)
        woken += 1
    return woken


async def run_recheck_dispatcher(
    client: Client, redis: aioredis.Redis, settings: Settings, stop: asyncio.Event, interval: float = 0.5
) -> None:
    """Loop until `stop` is set."""
    while not stop.is_set():
        try:
            await wake_rechecks(client, redis, settings)
        except Exception:  # keep dispatching; the scheduled refresh is the backstop
            log.exception("segment re-check dispatch failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
