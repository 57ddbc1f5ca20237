"""Activity: one pass of the analytics rollups (analytics/rollups.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.guards import heartbeating
from analytics.rollups import rollup_pass
from definitions.analytics import RollupInput, RollupResult


class AnalyticsActivities:
    """Built once in the worker with the shared engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @activity.defn(name="rollup_analytics")
    async def rollup_analytics(self, params: RollupInput) -> RollupResult:
        """Idempotent: each slice moves its watermark in the transaction
        that adds its counts, so a retry resumes where the last commit left."""
        async with heartbeating(every=10):
            return await rollup_pass(
                self._engine, lag_seconds=params.lag_seconds, slice_hours=params.slice_hours
            )


def build(engine: AsyncEngine) -> list[Callable[..., Any]]:
    """The analytics activities, bound to the worker's engine."""
    return [AnalyticsActivities(engine).rollup_analytics]
