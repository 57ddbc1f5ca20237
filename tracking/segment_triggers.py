"""After a group commit, queue the profiles whose new events or traits a
segment of their workspace depends on, so the worker re-checks them within
seconds instead of at the next scheduled refresh."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis

from segments.recheck import queue_profiles
from tracking.items import IngestItem

log = logging.getLogger(__name__)

DEPENDENCIES_SQL = "SELECT workspace_id, event_names, trait_keys FROM segments"


class SegmentTriggers:
    """Knows, per workspace, which event names and trait keys segments read
    (re-read every `ttl` seconds) and queues matching profiles in Redis."""

    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str, ttl: float = 5.0) -> None:
        self._pool = pool
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl
        self._loaded_at = -1e9
        self._deps: dict[uuid.UUID, tuple[frozenset[str], frozenset[str]]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def _dependencies(self) -> dict[uuid.UUID, tuple[frozenset[str], frozenset[str]]]:
        now = time.monotonic()
        if now - self._loaded_at > self._ttl:
            self._loaded_at = now
            names: dict[uuid.UUID, set[str]] = defaultdict(set)
            traits: dict[uuid.UUID, set[str]] = defaultdict(set)
            async with self._pool.acquire() as conn:
                for ws, event_names, trait_keys in await conn.fetch(DEPENDENCIES_SQL):
                    names[ws].update(event_names)
                    traits[ws].update(trait_keys)
            self._deps = {
                ws: (frozenset(names[ws]), frozenset(traits[ws])) for ws in names.keys() | traits.keys()
            }
        return self._deps

    def committed(self, items: Sequence[IngestItem]) -> None:
        """Called by the writer after a commit; works in the background."""
        if not self._deps and time.monotonic() - self._loaded_at <= self._ttl:
            return  # no workspace has segments: nothing to queue, no task per commit
        task = asyncio.create_task(self._queue(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _queue(self, items: Sequence[IngestItem]) -> None:
        try:
            deps = await self._dependencies()
            if not deps:
                return
            affected: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
            for item in items:
                wanted = deps.get(item.workspace_id)
                if wanted is None or item.profile_id is None:
                    continue
                names, traits = wanted
                if (item.event_name is not None and item.event_name in names) or (
                    item.traits and not traits.isdisjoint(item.traits)
                ):
                    affected[item.workspace_id].add(item.profile_id)
            await queue_profiles(self._redis, self._prefix, affected)
        except Exception:  # a missed re-check waits for the scheduled refresh
            log.exception("could not queue segment re-checks")

    async def close(self) -> None:
        """Let queued notifications finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
