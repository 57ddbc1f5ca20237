"""One transactional email as a short workflow, so each send and its
retries show in the Temporal UI."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from definitions.messages import SendEmailInput, SendEmailResult


@workflow.defn(name="SendMessageWorkflow")
class SendMessageWorkflow:
    """Runs `send_email` until a provider takes the message (retrying with
    backoff while none can), or it fails permanently."""

    @workflow.run
    async def run(self, params: SendEmailInput) -> SendEmailResult:
        return await workflow.execute_activity(
            "send_email",
            params,
            result_type=SendEmailResult,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=params.heartbeat_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=2),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=5),
                maximum_attempts=20,
                non_retryable_error_types=["MessageMissing"],
            ),
        )


WORKFLOWS = [SendMessageWorkflow]
