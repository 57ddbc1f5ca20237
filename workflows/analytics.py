"""The analytics rollup workflow, run on a Temporal Schedule."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from definitions.analytics import RollupInput, RollupResult


@workflow.defn(name="AnalyticsRollupWorkflow")
class AnalyticsRollupWorkflow:
    """Adds the events, profiles and segment sizes that arrived since the
    last pass to the hourly rollups the dashboard and analytics API read."""

    @workflow.run
    async def run(self, params: RollupInput) -> RollupResult:
        return await workflow.execute_activity(
            "rollup_analytics",
            params,
            result_type=RollupResult,
            # A first pass over a large history is a backfill: give it time.
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                maximum_interval=timedelta(minutes=2),
                maximum_attempts=10,
            ),
        )


WORKFLOWS = [AnalyticsRollupWorkflow]
