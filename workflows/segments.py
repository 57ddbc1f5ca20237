"""Segment workflows: refresh one segment, dispatch due refreshes, and
re-check profiles that tracking queued."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from definitions import search_attributes, workflow_ids
    from definitions.search_attributes import WORKSPACE_ID
    from definitions.segment_runs import (
        DueSegments,
        DueSegmentsInput,
        ProfilesChanged,
        RecheckInput,
        RecheckResult,
        SegmentRef,
        SegmentRefreshInput,
        SegmentRefreshResult,
    )

# Marks runs that page through every due segment (earlier runs took one page).
DRAIN_PATCH = "segment-dispatch-drains-every-page"

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
        id=workflow_ids.segment_refresh(ref.segment_id),
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        search_attributes=search_attributes.typed({WORKSPACE_ID: ref.workspace_id}),
    )


RECHECK_SIGNAL = "profiles_changed"
# Event ids remembered to drop redeliveries; older ones are forgotten (a
# re-check is idempotent, so a very late duplicate only costs a re-check).
_SEEN_EVENTS = 20_000
_CARRY_MAX = 5000  # RecheckInput.profile_ids' limit


@workflow.defn(name="SegmentRecheckWorkflow")
class SegmentRecheckWorkflow:
    """One per workspace while the outbox announces profile changes that
    segments read: re-checks the profiles in batches, drops event ids it has
    seen, ends after idling, continues as new when its history grows."""

    def __init__(self) -> None:
        self._pending: dict[str, None] = {}  # profile ids, in arrival order
        self._seen: dict[str, None] = {}

    @workflow.signal(name=RECHECK_SIGNAL)
    def profiles_changed(self, batch: ProfilesChanged) -> None:
        """Events (by id) touched these profiles."""
        for event_id, profile_id in zip(batch.event_ids, batch.profile_ids, strict=True):
            key = str(event_id)
            if key in self._seen:
                continue
            self._seen[key] = None
            self._pending[str(profile_id)] = None
        while len(self._seen) > _SEEN_EVENTS:
            del self._seen[next(iter(self._seen))]

    @workflow.run
    async def run(self, params: RecheckInput) -> int:
        for profile_id in params.profile_ids:
            self._pending[str(profile_id)] = None
        checked = 0
        while True:
            try:
                await workflow.wait_condition(lambda: bool(self._pending), timeout=timedelta(minutes=10))
            except TimeoutError:
                return checked
            batch = list(self._pending)[: params.batch_size]
            for profile_id in batch:
                del self._pending[profile_id]
            result = await workflow.execute_activity(
                "recheck_profiles",
                RecheckInput(
                    workspace_id=params.workspace_id, profile_ids=batch, batch_size=params.batch_size
                ),
                result_type=RecheckResult,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=_HEARTBEAT,
                retry_policy=_RETRY,
            )
            checked += result.profiles
            # Continue as new with what is pending, once that fits the input.
            if workflow.info().is_continue_as_new_suggested() and len(self._pending) <= _CARRY_MAX:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    RecheckInput(
                        workspace_id=params.workspace_id,
                        profile_ids=list(self._pending),
                        batch_size=params.batch_size,
                    )
                )


WORKFLOWS = [SegmentRefreshWorkflow, SegmentRefreshDispatchWorkflow, SegmentRecheckWorkflow]
