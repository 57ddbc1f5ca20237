"""Group commit: concurrent requests share one transaction.

A request hands its items to `GroupCommitWriter.write` and waits. A small
number of committer tasks each take everything queued so far, resolve
profiles and insert events in one transaction, then answer every waiting
request. A request is answered only after its transaction committed, so a
2xx always means stored; under load, groups grow and the commit cost per
event falls.

Conflicts with concurrent writers (another process created the same
profile, a profile was merged or deleted meanwhile, a deadlock) roll the
group back and run it again from a fresh read. A group that keeps failing
is split so that one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis

from core.errors import ServiceUnavailable, as_outage
from core.http import log_outage
from events.writer import ProfileChange
from tracking import repository as repo
from tracking.identity import IdentityCache, IdentityPlan, IdentityPlanner
from tracking.items import IngestItem

log = logging.getLogger(__name__)

_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)
MAX_ATTEMPTS = 6
MESSAGE_PIN_SECONDS = 7 * 24 * 3600
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _profile_changes(plan: IdentityPlan) -> list[ProfileChange]:
    """Trait keys set by identify calls and merges, for the outbox: a
    segment that reads a trait (or any merged profile) re-checks them."""
    changes = {
        p.id: ProfileChange(p.workspace_id, p.id, trait_keys=sorted(p.traits))
        for p in (*plan.creations, *plan.updates)
        if p.traits
    }
    for ws, _source, target in plan.merges:
        change = changes.setdefault(target, ProfileChange(ws, target))
        change.merged = True
    return list(changes.values())


class _StalePlan(Exception):
    """What the plan read changed before its locks were taken."""


@dataclass(slots=True)
class WriteResult:
    """What one request's items came to."""

    stored: int
    duplicates: int


@dataclass(slots=True)
class _Pending:
    items: Sequence[IngestItem]
    future: asyncio.Future[WriteResult]


class GroupCommitWriter:
    """Stores items from many concurrent requests in shared transactions."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis | None = None,
        *,
        redis_prefix: str = "mp:",
        max_events: int = 5000,
        concurrency: int = 2,
        spill_events: int = 300,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._redis_prefix = redis_prefix
        self._max_events = max_events
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._spill_events = spill_events
        self._wakeup = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._committer(n), name=f"group-commit-{n}") for n in range(concurrency)
        ]
        self._closed = False
        self._cache = IdentityCache()
        self.groups_committed = 0
        self.requests_committed = 0
        self.commit_seconds = 0.0
        self.events_committed = 0

    async def write(self, items: Sequence[IngestItem]) -> WriteResult:
        """Queue items and wait until they are committed (or failed)."""
        if self._closed:
            raise ServiceUnavailable("tracking is shutting down; retry")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(items, future))
        self._queued_events += len(items)
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish what is queued, then stop the committers."""
        self._closed = True
        while self._queue:
            self._wakeup.set()
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _take(self) -> list[_Pending]:
        """Everything queued, up to `max_events` (at least one request)."""
        taken: list[_Pending] = []
        count = 0
        queue = self._queue
        while queue and (not taken or count + len(queue[0].items) <= self._max_events):
            pending = queue.popleft()
            taken.append(pending)
            count += len(pending.items)
        self._queued_events -= count
        if queue:
            self._wakeup.set()
        return taken

    def _eligible(self, index: int) -> bool:
        # The first committer takes whatever is queued. The others only help
        # with a backlog: splitting small groups costs more per event than
        # it saves (measured in bench/tracking.py).
        return bool(self._queue) and (index == 0 or self._queued_events >= self._spill_events)

    async def _committer(self, index: int) -> None:
        while True:
            if not self._eligible(index):
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            group = self._take()
            try:
                await self._commit_group(group)
            except Exception:  # the committer must outlive any one group
                log.exception("group commit failed")
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(ServiceUnavailable("could not store events; retry"))

    async def _commit_group(self, group: list[_Pending]) -> None:
        items = [item for pending in group for item in pending.items]
        started = time.perf_counter()
        try:
            stored = await self._store_with_retries(items)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a 503 or a split, below
            outage = as_outage(exc)
            if outage is not None:
                # PostgreSQL is unreachable: halving the group would only
                # repeat the failure once per request.
                log_outage(outage, exc)
                for pending in group:
                    if not pending.future.done():  # its client may have gone away
                        pending.future.set_exception(ServiceUnavailable(outage.detail))
                return
            if len(group) == 1:
                log.warning("request failed to store: %r", exc)
                if not group[0].future.done():  # its client may have gone away
                    group[0].future.set_exception(ServiceUnavailable("could not store events; retry"))
                return
            # Isolate the culprit: store halves separately.
            middle = len(group) // 2
            await self._commit_group(group[:middle])
            await self._commit_group(group[middle:])
            return
        self.groups_committed += 1
        self.commit_seconds += time.perf_counter() - started
        self.requests_committed += len(group)
        self.events_committed += len(stored)
        for pending in group:
            events = [i for i in pending.items if i.event_name is not None]
            ok = sum(1 for i in events if i.event_id in stored)
            if not pending.future.done():
                pending.future.set_result(WriteResult(stored=ok, duplicates=len(events) - ok))

    async def _store_with_retries(self, items: list[IngestItem]) -> set:
        await self._pin_untimed_messages(items)
        keys = repo.identity_keys(items)
        delay = 0.005
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self._pool.acquire() as conn:
                    # A retry reads everything fresh: the cache may be why it failed.
                    planner = await self._planner(conn, keys, use_cache=attempt == 1)
                    plan = planner.plan(items)
                    if plan.only_known_profiles:
                        stored = await repo.lock_and_insert_events(conn, plan.locks, plan.seen, items)
                        if stored is None:
                            raise _StalePlan("a profile changed, merged or was deleted concurrently")
                    else:
                        async with conn.transaction():
                            stored = await self._apply(conn, plan, items)
            except (_StalePlan, *_RETRYABLE) as exc:
                self._forget(keys)
                if attempt == MAX_ATTEMPTS:
                    raise
                log.debug("group commit attempt %d conflicted: %r", attempt, exc)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            self._remember(planner, keys)
            return stored
        raise AssertionError("unreachable")

    async def _planner(
        self, conn: asyncpg.Connection, keys: repo.IdentityKeys, *, use_cache: bool
    ) -> IdentityPlanner:
        now = time.monotonic()
        rows: list = []
        missing: repo.IdentityKeys = {"u": set(), "e": set(), "a": set()}
        for kind, wanted in keys.items():
            for ws, key in wanted:
                row = self._cache.get(kind, ws, key, now) if use_cache else None
                if row is None:
                    missing[kind].add((ws, key))
                else:
                    rows.append(row)
        rows.extend(await repo.lookup_identities(conn, missing))
        return IdentityPlanner(rows)

    def _remember(self, planner: IdentityPlanner, keys: repo.IdentityKeys) -> None:
        now = time.monotonic()
        for kind, wanted in keys.items():
            for ws, key in wanted:
                self._cache.put(planner.resolve(kind, ws, key), kind, ws, key, now)

    def _forget(self, keys: repo.IdentityKeys) -> None:
        for kind, wanted in keys.items():
            for ws, key in wanted:
                self._cache.forget(kind, ws, key)

    async def _apply(self, conn: asyncpg.Connection, plan: IdentityPlan, items: list[IngestItem]) -> set:
        """The general case, inside a transaction: lock and check what the
        plan read, create, merge, update identities, alias, then insert."""
        lock_ids = sorted(plan.locks)
        current = await repo.lock_profiles(conn, lock_ids, plan.seen)
        for pid in lock_ids:
            if current.get(pid) != plan.locks[pid].loaded:
                raise _StalePlan("a profile changed, merged or was deleted concurrently")
        await repo.insert_profiles(conn, plan.creations, plan.seen)
        for ws, source, target in plan.merges:
            await repo.merge_profile(conn, ws, source, target)
        await repo.update_profiles(conn, plan.updates, plan.creations)
        await repo.upsert_aliases(conn, plan.aliases)
        return await repo.insert_events(conn, items, _profile_changes(plan))

    async def _pin_untimed_messages(self, items: list[IngestItem]) -> None:
        """A retried call with a messageId but no timestamp must land on the
        same (messageId, occurred_at) key as the first try: remember the
        first receipt time of such messageIds in Redis."""
        untimed = [i for i in items if i.has_message_id and not i.has_timestamp and i.event_name]
        if not untimed or self._redis is None:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for item in untimed:
                key = f"{self._redis_prefix}msg:{item.workspace_id}:{item.message_id}"
                pipe.set(key, (item.occurred_at - _EPOCH) // _MICROSECOND, nx=True, ex=MESSAGE_PIN_SECONDS)
                pipe.get(key)
            replies = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the event, lose only the pin
            log.warning("could not pin message ids in Redis: %r", exc)
            return
        for n, item in enumerate(untimed):
            first = replies[2 * n + 1]
            if first is not None:
                item.occurred_at = _EPOCH + timedelta(microseconds=int(first))
