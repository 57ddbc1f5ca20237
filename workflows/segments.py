"""Segment workflows: refresh one segment, dispatch due refreshes, and
re-check profiles that tracking queued."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from definitions import search_attributes, workflow_ids
    from definitions.search_attributes import WORKSPACE_ID
    from definitions.segment_runs import (
        DueSegments,
        DueSegmentsInput,
        RecheckInput,
        RecheckResult,
        SegmentRef,
        SegmentRefreshInput,
        SegmentRefreshResult,
    )

# Transient failures (database restarts, lock timeouts) retry with backoff;
# permanent ones (an invalid stored definition) are raised non-retryable by
# the activities and fail on the first attempt.
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1), maximum_attempts=8
)
# The activities heartbeat every few seconds while their SQL runs.
_HEARTBEAT = timedelta(seconds=30)


@workflow.defn(name="SegmentRefreshWorkflow")
class SegmentRefreshWorkflow:
    """Recompute one segment's members in the database and record who
    entered and who left."""

    @workflow.run
    async def run(self, params: SegmentRefreshInput) -> SegmentRefreshResult:
        return await workflow.execute_activity(
            "refresh_segment",
            params,
            result_type=SegmentRefreshResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=_HEARTBEAT,
            retry_policy=_RETRY,
        )


@workflow.defn(name="SegmentRefreshDispatchWorkflow")
class SegmentRefreshDispatchWorkflow:
    """Run by a schedule every minute: starts a refresh for each segment
    whose workspace interval has passed, skipping those still running."""

    @workflow.run
    async def run(self, params: DueSegmentsInput) -> int:
        due = await workflow.execute_activity(
            "due_segments",
            params,
            result_type=DueSegments,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=_RETRY,
        )

        async def start(ref: SegmentRef) -> bool:
            try:
                await workflow.start_child_workflow(
                    SegmentRefreshWorkflow.run,
                    SegmentRefreshInput(segment_id=ref.segment_id, workspace_id=ref.workspace_id),
                    id=workflow_ids.segment_refresh(ref.segment_id),
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    search_attributes=search_attributes.typed({WORKSPACE_ID: ref.workspace_id}),
                )
            except WorkflowAlreadyStartedError:
                return False  # still running from an earlier dispatch or a manual recalculation
            return True

        started = await asyncio.gather(*(start(ref) for ref in due.segments))
        return sum(started)


@workflow.defn(name="SegmentRecheckWorkflow")
class SegmentRecheckWorkflow:
    """One per workspace while tracking queues profiles: re-checks them in
    batches, sleeps until woken by the dispatcher, ends after idling."""

    def __init__(self) -> None:
        self._woken = False

    @workflow.signal
    def wake(self) -> None:
        """More profiles were queued."""
        self._woken = True

    @workflow.run
    async def run(self, params: RecheckInput) -> int:
        checked = 0
        for _ in range(500):
            self._woken = False
            result = await workflow.execute_activity(
                "recheck_profiles",
                params,
                result_type=RecheckResult,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=_HEARTBEAT,
                retry_policy=_RETRY,
            )
            checked += result.profiles
            if workflow.info().is_continue_as_new_suggested():
                break
            if result.remaining:
                continue
            try:
                await workflow.wait_condition(lambda: self._woken, timeout=timedelta(minutes=10))
            except TimeoutError:
                return checked
        workflow.continue_as_new(params)


WORKFLOWS = [SegmentRefreshWorkflow, SegmentRefreshDispatchWorkflow, SegmentRecheckWorkflow]
