"""Segment workflows: refresh one segment, dispatch due refreshes, and
re-check profiles that tracking queued."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
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

# Marks runs that page through every due segment (earlier runs took one page).
DRAIN_PATCH = "segment-dispatch-drains-every-page"

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1), maximum_attempts=8
)


def refresh_workflow_id(segment_id: object) -> str:
    """One id per segment, so a running refresh is never started twice."""
    return f"segment-refresh:{segment_id}"


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
            retry_policy=_RETRY,
        )


@workflow.defn(name="SegmentRefreshDispatchWorkflow")
class SegmentRefreshDispatchWorkflow:
    """Run by a schedule every minute: refreshes every segment whose
    workspace interval has passed, a page at a time, at most
    `concurrency` refreshes at once, skipping those already running.
    Continues as new between pages every `pages_per_run` pages, or sooner
    when Temporal suggests it, so the history stays short."""

    @workflow.run
    async def run(self, params: DueSegmentsInput) -> int:
        if not workflow.patched(DRAIN_PATCH):
            return await self._first_page_only(params)
        started = params.started
        page = params
        pages = 0
        while True:
            pages += 1
            due = await workflow.execute_activity(
                "due_segments",
                page,
                result_type=DueSegments,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=_RETRY,
            )
            started += await self._refresh_all(due.segments, page.concurrency)
            if due.next is None:
                return started
            page = page.model_copy(update={"after": due.next, "as_of": due.as_of, "started": started})
            if pages >= page.pages_per_run or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(page)

    async def _refresh_all(self, refs: list[SegmentRef], concurrency: int) -> int:
        """Refresh each segment as a child workflow, `concurrency` at a
        time; returns how many were started (not already running)."""
        slots = asyncio.Semaphore(concurrency)

        async def refresh(ref: SegmentRef) -> bool:
            async with slots:
                try:
                    child = await _start_refresh(ref)
                except WorkflowAlreadyStartedError:
                    return False  # still running from an earlier dispatch or a manual recalculation
                try:
                    await child
                except ChildWorkflowError:
                    # Its own retries are spent; it is still due, so the next dispatch tries again.
                    workflow.logger.warning("segment refresh %s failed", ref.segment_id)
                return True

        return sum(await asyncio.gather(*(refresh(ref) for ref in refs)))

    async def _first_page_only(self, params: DueSegmentsInput) -> int:
        # Runs started before DRAIN_PATCH: one page, every child started at once.
        due = await workflow.execute_activity(
            "due_segments",
            params,
            result_type=DueSegments,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=_RETRY,
        )

        async def start(ref: SegmentRef) -> bool:
            try:
                await _start_refresh(ref)
            except WorkflowAlreadyStartedError:
                return False
            return True

        return sum(await asyncio.gather(*(start(ref) for ref in due.segments)))


async def _start_refresh(ref: SegmentRef) -> workflow.ChildWorkflowHandle:
    return await workflow.start_child_workflow(
        SegmentRefreshWorkflow.run,
        SegmentRefreshInput(segment_id=ref.segment_id, workspace_id=ref.workspace_id),
        id=refresh_workflow_id(ref.segment_id),
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        search_attributes=TypedSearchAttributes([SearchAttributePair(WORKSPACE_ID, str(ref.workspace_id))]),
    )


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
