"""Activities of segment refreshes and re-checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.guards import heartbeating, permanent_errors
from core.settings import Settings
from definitions.segment_runs import (
    DueSegments,
    DueSegmentsInput,
    RecheckInput,
    RecheckResult,
    SegmentRef,
    SegmentRefreshInput,
    SegmentRefreshResult,
)
from segments import recheck as recheck_service
from segments import repository as repo
from segments import service


class SegmentActivities:
    """Built once in the worker with the shared engine and Redis client."""

    def __init__(self, engine: AsyncEngine, redis: aioredis.Redis, redis_prefix: str) -> None:
        self._engine = engine
        self._redis = redis
        self._prefix = redis_prefix

    @activity.defn(name="refresh_segment")
    async def refresh_segment(self, params: SegmentRefreshInput) -> SegmentRefreshResult:
        """Recompute one segment in one transaction (idempotent: a retry
        after a commit finds nothing left to change)."""
        started = time.perf_counter()
        async with heartbeating(), self._engine.begin() as conn:
            with permanent_errors():  # an invalid stored definition fails at once
                counts = await service.refresh(conn, params.workspace_id, params.segment_id)
        if counts is None:
            return SegmentRefreshResult(segment_id=params.segment_id, found=False)
        members, entered, exited = counts
        return SegmentRefreshResult(
            segment_id=params.segment_id,
            member_count=members,
            entered=entered,
            exited=exited,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    @activity.defn(name="due_segments")
    async def due_segments(self, params: DueSegmentsInput) -> DueSegments:
        """Segments whose workspace interval has passed since their last refresh."""
        async with self._engine.connect() as conn:
            due = await repo.due_segments(conn, datetime.now(UTC), params.limit)
        return DueSegments(segments=[SegmentRef(segment_id=s, workspace_id=w) for s, w in due])

    @activity.defn(name="recheck_profiles")
    async def recheck_profiles(self, params: RecheckInput) -> RecheckResult:
        """Re-check a batch of the profiles tracking queued for this workspace.
        Popped ids that fail to apply are re-queued."""
        ids, remaining = await recheck_service.pop_profiles(
            self._redis, self._prefix, params.workspace_id, params.batch_size
        )
        if not ids:
            return RecheckResult(profiles=0, entered=0, exited=0, remaining=remaining)
        try:
            async with heartbeating(), self._engine.begin() as conn:
                with permanent_errors():
                    entered, exited = await recheck_service.recheck(conn, params.workspace_id, ids)
        except BaseException:
            await recheck_service.queue_profiles(self._redis, self._prefix, {params.workspace_id: set(ids)})
            raise
        return RecheckResult(profiles=len(ids), entered=entered, exited=exited, remaining=remaining)


def build(engine: AsyncEngine, redis: aioredis.Redis, settings: Settings) -> list[Callable[..., Any]]:
    """The segment activities, bound to clients built once in the worker."""
    segments = SegmentActivities(engine, redis, settings.redis_prefix)
    return [segments.refresh_segment, segments.due_segments, segments.recheck_profiles]
