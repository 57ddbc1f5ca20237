"""Maintenance workflows run on Temporal Schedules."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from definitions.maintenance import (
        EnsurePartitionsInput,
        EnsurePartitionsResult,
        OutboxSweepInput,
        OutboxSweepResult,
    )


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


@workflow.defn(name="OutboxSweepWorkflow")
class OutboxSweepWorkflow:
    """Run by a schedule every minute: hands again to Temporal the outbox
    rows whose dispatcher died or that Temporal refused (their lease ran out)."""

    @workflow.run
    async def run(self, params: OutboxSweepInput) -> OutboxSweepResult:
        return await workflow.execute_activity(
            "sweep_outbox",
            params,
            result_type=OutboxSweepResult,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=2),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
            ),
        )


WORKFLOWS = [EventPartitionsWorkflow, OutboxSweepWorkflow]
