"""`CampaignSendWorkflow`: one campaign's send, from its schedule to its
last batch.

1. `begin_campaign` reads the campaign (locking its row, so a request that
   just changed it has committed). While its time has not come the run
   waits on a timer that a `wake` (rescheduled, "send now") or `cancel`
   signal cuts short, then reads it again.
2. `snapshot_campaign` numbers the audience into `campaign_recipients` in
   one SQL statement (a segment changing later changes nothing).
3. The snapshot is walked in batches of `batch_size` sequence numbers with
   at most `window` `send_batch` activities in flight. `pause` and `cancel`
   cancel the batches in flight, each stopping after the group of sends it
   is in; `resume` hands a paused batch's range out again; a cancel ends
   the campaign (recipients not sent to are marked cancelled). Each message has an idempotency key per
   (campaign, person), so a retried batch never sends twice.
4. Progress is the `progress` query, mirrored into the campaign row every
   few batches. After `batches_per_run` batches (or when Temporal suggests
   it) the run drains its window and continues as new with the cursor.
5. An A/B test's group (the snapshot's first `test_end` recipients, each
   with a variant) is walked first; then a durable timer of the test's
   `wait_seconds` (cut short only by `cancel`), `choose_ab_winner`, and
   the walk goes on through the rest with the winner's content.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from definitions.campaigns import (
        CANCEL_SIGNAL,
        LIVE,
        LOCAL_LEAD,
        PAUSE_SIGNAL,
        PROGRESS_QUERY,
        RESUME_SIGNAL,
        WAKE_SIGNAL,
        ABDecision,
        BatchResult,
        CampaignProgress,
        CampaignRef,
        CampaignSendInput,
        CampaignState,
        FinishInput,
        SendBatchInput,
        SnapshotResult,
        throttled_batch,
    )

# Short bookkeeping activities: transient failures retry with backoff; a
# campaign or segment gone is raised non-retryable and ends the send failed.
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["NotFound", "ValidationFailed"],
)
# A batch retries until every message found a provider (an outage of every
# provider waits, it does not fail the campaign); pause and cancel still
# take effect, cancelling the batch between attempts.
_BATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
)
_SHORT = timedelta(seconds=60)
# Marks runs that may hold an A/B test (its wait and winner commands).
AB_TEST_PATCH = "ab-test"
_MIRROR_EVERY = 8  # batches between progress writes to the campaign row


@workflow.defn(name="CampaignSendWorkflow")
class CampaignSendWorkflow:
    """One campaign's send; see the module docstring."""

    @workflow.init
    def __init__(self, params: CampaignSendInput) -> None:
        self._progress = params.progress.model_copy() if params.progress else CampaignProgress()
        self._paused = params.paused
        self._cancelled = False
        self._wakes = 0
        self._throttle = params.throttle_per_hour
        self._next_launch = workflow.now()

    @workflow.signal(name=PAUSE_SIGNAL)
    def pause(self, _: object = None) -> None:
        """Start no new batch until `resume`."""
        self._paused = True

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self, _: object = None) -> None:
        """Go on from where the send stopped."""
        self._paused = False

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel(self, _: object = None) -> None:
        """Stop now: nothing more is sent."""
        self._cancelled = True

    @workflow.signal(name=WAKE_SIGNAL)
    def wake(self, _: object = None) -> None:
        """The schedule changed: read it again."""
        self._wakes += 1

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> CampaignProgress:
        """Where the send stands."""
        return self._progress.model_copy(update={"status": self._status()})

    def _status(self) -> str:
        if self._cancelled:
            return "cancelled"
        if self._paused:
            return "paused"
        return self._progress.status

    @workflow.run
    async def run(self, params: CampaignSendInput) -> CampaignProgress:
        ref = CampaignRef(workspace_id=params.workspace_id, campaign_id=params.campaign_id)
        try:
            if params.progress is None:
                if not await self._wait_for_schedule(ref):
                    return self.progress()
                snapshot = await self._activity("snapshot_campaign", ref, SnapshotResult)
                self._progress.total = snapshot.total
                self._progress.waves = snapshot.waves
                self._progress.test_end = snapshot.test_end
                self._progress.wait_seconds = snapshot.wait_seconds
                self._progress.status = "sending"
                if snapshot.total == 0:
                    self._progress.detail = "empty audience: nobody to send to"
                    return await self._finish(ref, "sent")
            await self._walk(ref, params)
            undecided = self._progress.test_end and self._progress.winner is None
            if (
                undecided
                and not self._cancelled
                and workflow.patched(AB_TEST_PATCH)
                and await self._choose_winner(ref)
            ):
                await self._walk(ref, params)
        except ActivityError as exc:
            self._progress.detail = f"the send failed: {exc.cause or exc}"[:1000]
            return await self._finish(ref, "failed")
        return await self._finish(ref, "cancelled" if self._cancelled else "sent")

    async def _wait_for_schedule(self, ref: CampaignRef) -> bool:
        """Wait until the campaign's time; False when it ended meanwhile
        (cancelled, deleted, or never scheduled)."""
        while True:
            wakes = self._wakes
            state = await self._activity("begin_campaign", ref, CampaignState)
            if self._cancelled or state.status not in LIVE:
                self._progress.status = state.status
                if self._cancelled or state.status == "cancelled":
                    self._cancelled = True
                    await self._finish(ref, "cancelled")
                return False
            if state.status == "paused":
                self._paused = True
            self._throttle = state.throttle_per_hour
            if state.status != "scheduled" or state.scheduled_at is None:
                return True
            # A local-time campaign starts when the first zone reaches its time.
            start = state.scheduled_at - LOCAL_LEAD if state.local_time else state.scheduled_at
            remaining = (start - workflow.now()).total_seconds()
            if remaining <= 0:
                return True
            try:
                await workflow.wait_condition(
                    lambda wakes=wakes: self._cancelled or self._wakes != wakes,
                    timeout=timedelta(seconds=remaining),
                )
            except TimeoutError:
                pass

    async def _choose_winner(self, ref: CampaignRef) -> bool:
        """The A/B test's group is sent: wait its `wait_seconds` on a timer
        (visible in the Temporal UI; a pause does not stop the clock, a
        cancel ends the wait), then choose the winner. False when cancelled."""
        await self._mirror(ref)
        wait = timedelta(seconds=self._progress.wait_seconds)
        timer = asyncio.ensure_future(
            workflow.sleep(wait, summary="A/B test: wait before choosing the winner")
        )
        await workflow.wait_condition(lambda: timer.done() or self._cancelled)
        if not timer.done():
            timer.cancel()
            return False
        decision = await self._activity("choose_ab_winner", ref, ABDecision)
        self._progress.winner = decision.winner
        return not self._cancelled

    async def _walk(self, ref: CampaignRef, params: CampaignSendInput) -> None:
        """Hand the snapshot to `send_batch` activities, `window` at a time.
        A pause or cancel cancels the batches in flight (each stops after
        the group of sends it is in); a paused batch's range is handed out
        again on resume (its sent messages are found sent, not sent again).
        With a throttle, one batch of a few seconds' worth at a time, each
        started once the previous one's share of the hour has passed."""
        progress = self._progress
        throttle = self._throttle
        size = throttled_batch(params.batch_size, throttle) if throttle else params.batch_size
        window = 1 if throttle else params.window
        in_flight: dict[asyncio.Task[BatchResult], tuple[int, int]] = {}
        stopped: set[asyncio.Task[BatchResult]] = set()
        batches = finished = 0

        def more() -> bool:
            return bool(progress.redo) or progress.cursor <= progress.limit()

        def launch_wait() -> float:
            """Seconds until the next batch may start: the throttle, and
            (local-time campaigns) when the next recipients are due."""
            wait = (self._next_launch - workflow.now()).total_seconds() if throttle else 0.0
            if progress.waves and not progress.redo and progress.cursor <= progress.limit():
                due, _ = progress.due(progress.cursor)
                if due is not None:
                    wait = max(wait, (due - workflow.now()).total_seconds())
            return wait

        while True:
            can_start = not self._cancelled and not self._paused and batches < params.batches_per_run
            while can_start and len(in_flight) < window and more() and launch_wait() <= 0:
                if progress.redo:
                    first, last = progress.redo.pop(0)
                else:
                    first, last = progress.cursor, min(progress.cursor + size - 1, progress.limit())
                    _, following = progress.due(first)
                    if following is not None:  # a batch never reaches into a later wave
                        last = min(last, following - 1)
                    progress.cursor = last + 1
                in_flight[asyncio.ensure_future(self._batch(ref, first, last, params))] = (first, last)
                batches += 1
                if throttle:
                    self._next_launch = workflow.now() + timedelta(
                        seconds=(last - first + 1) * 3600 / throttle
                    )
            if not in_flight:
                if self._cancelled or not more():
                    return
                await self._mirror(ref)
                if self._paused:
                    await workflow.wait_condition(lambda: not self._paused or self._cancelled)
                    continue
                if batches >= params.batches_per_run:
                    # This run's share is done: go on in a fresh run with the cursor.
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(
                        params.model_copy(
                            update={
                                "progress": progress,
                                "paused": self._paused,
                                "throttle_per_hour": throttle,
                            }
                        )
                    )
            halted = self._cancelled or self._paused
            waiting = can_start and len(in_flight) < window and more()
            try:
                await workflow.wait_condition(
                    lambda halted=halted: (
                        any(t.done() for t in in_flight) or ((self._cancelled or self._paused) and not halted)
                    ),
                    timeout=timedelta(seconds=max(launch_wait(), 0.001))
                    if waiting and launch_wait() > 0
                    else None,
                )
            except TimeoutError:
                continue  # the throttle lets the next batch go
            if (self._cancelled or self._paused) and not halted:
                for task in in_flight:
                    if not task.done():
                        stopped.add(task)
                        task.cancel()
            for task in [t for t in in_flight if t.done()]:
                span = in_flight.pop(task)
                try:
                    result = task.result()
                    if result.stopped:
                        progress.redo.append(span)
                    else:
                        progress.add(result)
                except (ActivityError, asyncio.CancelledError):
                    if task not in stopped:
                        raise
                    progress.redo.append(span)
                stopped.discard(task)
                finished += 1
                if finished % _MIRROR_EVERY == 0:
                    await self._mirror(ref)
            if workflow.info().is_continue_as_new_suggested():
                batches = params.batches_per_run  # drain, then continue as new

    async def _batch(self, ref: CampaignRef, first: int, last: int, params: CampaignSendInput) -> BatchResult:
        return await workflow.execute_activity(
            "send_batch",
            SendBatchInput(
                workspace_id=ref.workspace_id,
                campaign_id=ref.campaign_id,
                first_seq=first,
                last_seq=last,
                winner=self._progress.winner,
            ),
            result_type=BatchResult,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=params.heartbeat_seconds),
            retry_policy=_BATCH_RETRY,
            # A cancelled campaign waits for its batches to stop (each
            # finishes the group of sends it is in), so nothing is sent after.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

    async def _mirror(self, ref: CampaignRef) -> None:
        await self._activity(
            "record_campaign_progress",
            FinishInput(
                workspace_id=ref.workspace_id,
                campaign_id=ref.campaign_id,
                status=self._status(),
                progress=self._progress,
            ),
        )

    async def _finish(self, ref: CampaignRef, status: str) -> CampaignProgress:
        self._progress.status = status
        finished = await self._activity(
            "finish_campaign",
            FinishInput(
                workspace_id=ref.workspace_id,
                campaign_id=ref.campaign_id,
                status=status,
                progress=self._progress,
            ),
            CampaignProgress,
        )
        self._progress = finished
        return finished

    async def _activity(self, name: str, arg: object, result_type: type | None = None) -> object:
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=_SHORT, retry_policy=_RETRY
        )


WORKFLOWS = [CampaignSendWorkflow]
