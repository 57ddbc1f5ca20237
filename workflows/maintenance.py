"""Maintenance workflows run on Temporal Schedules."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from definitions.maintenance import EnsurePartitionsInput, EnsurePartitionsResult


@workflow.defn(name="EventPartitionsWorkflow")
class EventPartitionsWorkflow:
    """Creates the monthly `events` partitions ahead of time (and drains
    rows that arrived early into the default partition)."""

    @workflow.run
    async def run(self, params: EnsurePartitionsInput) -> EnsurePartitionsResult:
        return await workflow.execute_activity(
            "ensure_event_partitions",
            params,
            result_type=EnsurePartitionsResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                maximum_interval=timedelta(minutes=5),
                maximum_attempts=10,
            ),
        )


WORKFLOWS = [EventPartitionsWorkflow]
