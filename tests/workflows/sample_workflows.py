"""Workflows that exist only for tests.

- Deliberately altered copies of `SendMessageWorkflow`, for the replay
  guard's own test: one adds an activity call before the send (a changed
  command sequence), the other adds the same call behind `workflow.patched()`
  (the sanctioned way to change a running workflow).
- `SignalCollector`, which records the signals it gets, for the tests of the
  start/signal helper in core/temporal.py.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from definitions.maintenance import EnsurePartitionsInput, EnsurePartitionsResult
    from definitions.messages import SendEmailInput, SendEmailResult

_RETRY = RetryPolicy(maximum_attempts=3)


async def _extra_step() -> None:
    await workflow.execute_activity(
        "ensure_event_partitions",
        EnsurePartitionsInput(),
        result_type=EnsurePartitionsResult,
        start_to_close_timeout=timedelta(minutes=1),
        retry_policy=_RETRY,
    )


async def _send(params: SendEmailInput) -> SendEmailResult:
    return await workflow.execute_activity(
        "send_email",
        params,
        result_type=SendEmailResult,
        start_to_close_timeout=timedelta(minutes=2),
        heartbeat_timeout=timedelta(seconds=params.heartbeat_seconds),
        retry_policy=_RETRY,
    )


@workflow.defn(name="SendMessageWorkflow")
class SendMessageWithExtraStep:
    """An extra activity before the send, added without `patched()`."""

    @workflow.run
    async def run(self, params: SendEmailInput) -> SendEmailResult:
        await _extra_step()
        return await _send(params)


@workflow.defn(name="SendMessageWorkflow")
class SendMessageWithPatchedStep:
    """The same extra activity, only in runs that start after the change."""

    @workflow.run
    async def run(self, params: SendEmailInput) -> SendEmailResult:
        if workflow.patched("send-message-extra-step"):
            await _extra_step()
        return await _send(params)


@workflow.defn(name="SignalCollector")
class SignalCollector:
    """Collects `add` signals until `finish`; returns what it collected."""

    def __init__(self) -> None:
        self._values: list[int] = []
        self._done = False

    @workflow.signal
    def add(self, value: int) -> None:
        """Record one value."""
        self._values.append(value)

    @workflow.signal
    def finish(self) -> None:
        """End the run."""
        self._done = True

    @workflow.run
    async def run(self, name: str) -> list[int]:
        await workflow.wait_condition(lambda: self._done)
        return self._values
