"""`FlowDateTriggersWorkflow`, run by a schedule: the date triggers of flows.

Kept out of workflows/flows.py, which the sandbox executes again for every
new enrollment run."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from definitions.flow_runs import DateTriggersInput, DateTriggersResult


@workflow.defn(name="FlowDateTriggersWorkflow")
class FlowDateTriggersWorkflow:
    """Run by a schedule every few minutes: announces the people whose
    date trait makes a date-triggered flow due today (see
    `announce_date_triggers`); the outbox dispatcher enrolls them."""

    @workflow.run
    async def run(self, params: DateTriggersInput) -> DateTriggersResult:
        return await workflow.execute_activity(
            "announce_date_triggers",
            result_type=DateTriggersResult,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=10),
        )


WORKFLOWS = [FlowDateTriggersWorkflow]
