"""Activity: keep monthly `events` partitions created ahead of time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.guards import heartbeating
from db import partitions as repo
from definitions.maintenance import EnsurePartitionsInput, EnsurePartitionsResult

# Early rows older or newer than this stay in the default partition rather
# than creating a partition per bad client clock.
STRAY_YEARS_BACK = 5
STRAY_YEARS_AHEAD = 1


def add_months(month: date, n: int) -> date:
    """The first day of the month `n` months after `month`."""
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


class PartitionActivities:
    """Built once in the worker with the shared engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @activity.defn(name="ensure_event_partitions")
    async def ensure_event_partitions(self, params: EnsurePartitionsInput) -> EnsurePartitionsResult:
        """Idempotent: creates what is missing, moves early rows out of the
        default partition, reports what it did."""
        today = datetime.now(UTC).date().replace(day=1)
        wanted = [add_months(today, n) for n in range(-1, params.months_ahead + 1)]
        async with self._engine.connect() as conn:
            stray = await repo.months_in_default(
                conn, add_months(today, -12 * STRAY_YEARS_BACK), add_months(today, 12 * STRAY_YEARS_AHEAD)
            )
        created: list[str] = []
        # Moving a month of early rows out of the default partition can take
        # longer than the heartbeat timeout: keep beating while it runs.
        async with heartbeating(every=20):
            for month in sorted(set(wanted) | set(stray)):
                async with self._engine.begin() as conn:
                    name = await repo.ensure_month(conn, month)
                if name:
                    created.append(name)
        async with self._engine.connect() as conn:
            existing = len(await repo.list_month_partitions(conn))
        moved = [f"events_{m:%Y_%m}" for m in stray if f"events_{m:%Y_%m}" in created]
        return EnsurePartitionsResult(created=created, existing=existing, moved_from_default=moved)


def build(engine: AsyncEngine) -> list[Callable[..., Any]]:
    """The maintenance activities, bound to the worker's engine."""
    return [PartitionActivities(engine).ensure_event_partitions]
