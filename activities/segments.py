"""Activities of segment refreshes and re-checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.guards import heartbeating, permanent_errors
from definitions.segment_runs import (
    DueCursor,
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
    """Built once in the worker with the shared engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

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
        """One page of segments whose workspace interval had passed at
        `as_of` (now, on the first page), after the cursor."""
        as_of = params.as_of or datetime.now(UTC)
        after = (params.after.computed_at, params.after.segment_id) if params.after else None
        async with self._engine.connect() as conn:
            due = await repo.due_segments(conn, as_of, params.limit, after)
        last = due[-1] if len(due) == params.limit else None
        return DueSegments(
            segments=[SegmentRef(segment_id=s, workspace_id=w) for s, w, _ in due],
            as_of=as_of,
            next=DueCursor(computed_at=last[2], segment_id=last[0]) if last else None,
        )

    @activity.defn(name="recheck_profiles")
    async def recheck_profiles(self, params: RecheckInput) -> RecheckResult:
        """Re-check the given profiles of a workspace in one transaction
        (idempotent: a retry after a commit finds nothing left to change)."""
        if not params.profile_ids:
            return RecheckResult(profiles=0, entered=0, exited=0)
        async with heartbeating(), self._engine.begin() as conn:
            with permanent_errors():
                entered, exited = await recheck_service.recheck(conn, params.workspace_id, params.profile_ids)
        return RecheckResult(profiles=len(params.profile_ids), entered=entered, exited=exited)


def build(engine: AsyncEngine) -> list[Callable[..., Any]]:
    """The segment activities, bound to clients built once in the worker."""
    segments = SegmentActivities(engine)
    return [segments.refresh_segment, segments.due_segments, segments.recheck_profiles]
