"""A per-client limit on failed API key lookups, kept in Redis.

Every key that is not in a process's cache costs a PostgreSQL lookup, so a
client sending made-up keys could make the database do work at whatever
rate it likes. Each failed lookup spends one token of the client
address's bucket (`rate` per second, `burst` at most, GCRA in one Lua
call); a client whose bucket is empty gets 429 with `Retry-After` before
any lookup. Keys already cached never reach the limiter, so valid traffic
keeps its latency even from a flooding address.

Redis trouble never fails a request: the limiter fails open (lets the
lookup happen) and stops asking Redis for a few seconds, so an outage does
not add a timeout to every request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5
"""Longest a request waits on the limiter before going ahead without it."""
PAUSE_AFTER_ERROR_SECONDS = 2.0

# KEYS[1] bucket; ARGV: now (ms), interval (ms), burst tolerance (ms).
# Stores the theoretical arrival time of the next failure; returns it.
_SPEND = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
if tat < now then tat = now end
tat = tat + tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now + tonumber(ARGV[3])) + 1000)
return tostring(tat)
"""


class AuthFailureLimiter:
    """Failed key lookups per client address, shared by every process."""

    def __init__(self, redis: aioredis.Redis, prefix: str, rate: float, burst: int) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authfail:"
        self._interval_ms = 1000.0 / rate
        self._tolerance_ms = self._interval_ms * max(burst, 1)
        self._spend = redis.register_script(_SPEND)
        self._paused_until = 0.0

    def _usable(self) -> bool:
        return time.monotonic() >= self._paused_until

    def _pause(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_SECONDS
        log.warning("auth failure limiter off for %.0f s: Redis: %r", PAUSE_AFTER_ERROR_SECONDS, exc)

    async def retry_after(self, client: str) -> int | None:
        """Seconds the client must wait before another lookup, or None."""
        if not self._usable():
            return None
        try:
            stored = await asyncio.wait_for(self._redis.get(self._prefix + client), REDIS_TIMEOUT_SECONDS)
        except (RedisError, OSError, TimeoutError) as exc:
            self._pause(exc)
            return None
        if stored is None:
            return None
        wait_ms = float(stored) - time.time() * 1000 - self._tolerance_ms
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else None

    async def failed(self, client: str) -> None:
        """Spend a token for a failed lookup."""
        if not self._usable():
            return
        now_ms = time.time() * 1000
        try:
            await asyncio.wait_for(
                self._spend(
                    keys=[self._prefix + client], args=[now_ms, self._interval_ms, self._tolerance_ms]
                ),
                REDIS_TIMEOUT_SECONDS,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._pause(exc)
