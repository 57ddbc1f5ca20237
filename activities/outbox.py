"""Activity: the outbox sweep (rows whose lease ran out are dispatched again)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from definitions.maintenance import OutboxSweepInput, OutboxSweepResult
from events.dispatcher import OutboxDispatcher


class OutboxActivities:
    """Built once in the worker around its dispatcher."""

    def __init__(self, dispatcher: OutboxDispatcher) -> None:
        self._dispatcher = dispatcher

    @activity.defn(name="sweep_outbox")
    async def sweep_outbox(self, params: OutboxSweepInput) -> OutboxSweepResult:
        """Dispatch expired claims batch by batch, heartbeating between
        batches; safe beside running dispatchers (SKIP LOCKED leases)."""
        total = 0
        for _ in range(params.max_batches):
            claimed = await self._dispatcher.dispatch_once(expired=True)
            total += claimed
            activity.heartbeat(total)
            if claimed == 0:
                break
        return OutboxSweepResult(redispatched=total)


def build(dispatcher: OutboxDispatcher) -> list[Callable[..., Any]]:
    """The outbox activities around the worker's dispatcher."""
    return [OutboxActivities(dispatcher).sweep_outbox]
