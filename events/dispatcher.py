"""Hands outbox rows to Temporal.

`OutboxDispatcher.dispatch_once` leases a batch of rows, asks each row's
consumer (a function registered by the domain that listens: segments
today, flows next) which workflows to signal, signals-with-start them
concurrently, then deletes the rows that were handed over. Rows Temporal
refused are pushed back with a growing delay; rows of a dispatcher that
died keep their lease until it runs out. The worker runs `run` (new rows,
every few hundred milliseconds) and the `OutboxSweepWorkflow` schedule runs
`dispatch_once(expired=True)` (rows whose lease ran out).

Delivery is at least once; every consumer workflow drops event ids it has
seen, so the effect is once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from core.temporal import WorkflowStart, signal_workflow, start_workflow
from events import outbox
from events.outbox import OutboxRow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Delivery:
    """One signal-with-start of a consumer workflow, carrying some rows.
    Without `arg` it is a plain signal to a run that should exist: a run
    that is gone (finished, exited) needs the event no more."""

    workflow: str
    workflow_id: str
    arg: BaseModel | None
    signal: str
    signal_arg: BaseModel
    rows: list[int]
    search: Mapping[SearchAttributeKey[str], str] = field(default_factory=dict)


# A consumer turns claimed rows into deliveries; it may read the database.
# Rows it returns in no delivery are done (nothing listens any more).
Consumer = Callable[[Sequence[OutboxRow]], Awaitable[list[Delivery]]]


class OutboxDispatcher:
    """Built once per worker with the engine, the Temporal client and the
    consumers by name."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: Client,
        task_queue: str,
        consumers: Mapping[str, Consumer],
        *,
        batch_size: int = 500,
        lease_seconds: float = 60.0,
        concurrency: int = 32,
    ) -> None:
        self._engine = engine
        self._client = client
        self._task_queue = task_queue
        self._consumers = consumers
        self._batch_size = batch_size
        self._lease = lease_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self.dispatched = 0

    async def dispatch_once(self, *, expired: bool = False) -> int:
        """One batch; returns how many events (OutboxRows) were claimed."""
        rows = await outbox.claim(
            self._engine, list(self._consumers), self._batch_size, self._lease, expired=expired
        )
        if not rows:
            return 0
        deliveries: list[Delivery] = []
        by_consumer: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_consumer.setdefault(row.consumer, []).append(row)
        failed: list[int] = []
        for name, group in by_consumer.items():
            try:
                deliveries += await self._consumers[name](group)
            except Exception:  # its rows wait for the sweep; other consumers go on
                log.exception("outbox consumer %s failed", name)
                failed += [r.id for r in group]
        results = await asyncio.gather(*(self._deliver(d) for d in deliveries))
        failed += [i for d, ok in zip(deliveries, results, strict=True) if not ok for i in d.rows]
        # A row is done when every delivery of its events was; one refusal
        # sends all of it to the sweep (consumers drop what they have seen).
        refused = set(failed)
        done = sorted({r.id for r in rows} - refused)
        await outbox.delete(self._engine, done)
        await outbox.delay(self._engine, sorted(refused))
        self.dispatched += sum(1 for r in rows if r.id not in refused)
        return len(rows)

    async def _deliver(self, delivery: Delivery) -> bool:
        async with self._limit:
            if delivery.arg is None:
                return await self._signal(delivery)
            start = WorkflowStart(
                delivery.workflow,
                delivery.arg,
                id=delivery.workflow_id,
                start_signal=delivery.signal,
                start_signal_args=[delivery.signal_arg],
                search_attributes=delivery.search,
            )
            try:
                await start_workflow(self._client, start, self._task_queue)
            except Exception as exc:  # noqa: BLE001 - any refusal leaves the rows for the sweep
                log.warning("could not signal %s: %r", delivery.workflow_id, exc)
                return False
        return True

    async def _signal(self, delivery: Delivery) -> bool:
        try:
            # False: the run ended, nothing waits for this event; the row is done either way.
            await signal_workflow(self._client, delivery.workflow_id, delivery.signal, delivery.signal_arg)
        except Exception as exc:  # noqa: BLE001 - any refusal leaves the rows for the sweep
            log.warning("could not signal %s: %r", delivery.workflow_id, exc)
            return False
        return True

    async def run(self, stop: asyncio.Event, interval: float = 0.05) -> None:
        """Dispatch new rows until `stop` is set: at once while there is a
        backlog, else every `interval` seconds."""
        failures = 0
        while not stop.is_set():
            pause = interval
            try:
                claimed = await self.dispatch_once()
                failures = 0
            except Exception:  # database down: keep trying; nothing is lost, rows wait in the outbox
                failures += 1
                if failures == 1 or failures % 50 == 0:  # one log line, not twenty a second
                    log.exception("outbox dispatch failed (%d in a row)", failures)
                claimed = 0
                pause = min(5.0, interval * 2**failures)
            if claimed >= self._batch_size:
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=pause)
            except TimeoutError:
                pass
