"""Per-provider circuit breaker and token bucket, kept in Redis so every
worker process shares them. Each decision is one Lua script, so
concurrent workers never race; times come from Redis's clock."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS: bucket. ARGV: rate (tokens/s), burst, max_wait (s).
# Takes a token now, or reserves the next one if it comes within max_wait.
# Returns the seconds to wait (0 = go now), or -1 when the wait is too long.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local rate, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
  if wait > max_wait then
    redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
    redis.call('EXPIRE', KEYS[1], 3600)
    return '-1'
  end
end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'at', now)
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(wait)
"""

# KEYS: bucket. ARGV: rate (tokens/s), burst, max_wait (s), count.
# `_TAKE` for up to `count` tokens at once (a batch of messages): takes as
# many as are there now or come within max_wait, each one counted. Returns
# "granted tokens_before": the k-th granted token (from 1) is due after
# max(0, (k - tokens_before) / rate) seconds; granted 0 when not even one
# comes within max_wait.
_TAKE_MANY = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local rate, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local granted = math.min(count, math.floor(tokens + max_wait * rate + 1e-9))
if granted < 0 then granted = 0 end
redis.call('HSET', KEYS[1], 'tokens', tokens - granted, 'at', now)
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(granted) .. ' ' .. tostring(tokens)
"""

# KEYS: failures, open_until, probe. ARGV: probe_ttl_ms.
# Returns 'clean' (closed, no recent failures), 'closed' (closed, some
# failures counted), 'probe' (half-open: this caller may try once), 'open'.
_ALLOW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local open_until = tonumber(redis.call('GET', KEYS[2]))
if not open_until then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'closed' end
  return 'clean'
end
if now < open_until then return 'open' end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return 'probe' end
return 'open'
"""

# KEYS: failures, open_until, probe. ARGV: threshold, window_s, cooldown_s, was_probe.
# Returns 'opened' when this failure (re)opened the breaker.
_FAIL = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
if ARGV[4] == '1' then
  redis.call('SET', KEYS[2], tostring(now + tonumber(ARGV[3])))
  redis.call('DEL', KEYS[3], KEYS[1])
  return 'opened'
end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) and not redis.call('GET', KEYS[2]) then
  redis.call('SET', KEYS[2], tostring(now + tonumber(ARGV[3])))
  redis.call('DEL', KEYS[1])
  return 'opened'
end
return 'counted'
"""

# KEYS: failures, open_until, probe. Closes the breaker.
_SUCCEED = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 'closed'
"""


# KEYS: probe. Gives the half-open probe back unused (the prober skipped the
# provider without calling it), so the next caller may probe at once.
_RELEASE = """
redis.call('DEL', KEYS[1])
return 'released'
"""


@dataclass(frozen=True)
class BreakerPolicy:
    """When a provider is taken out of rotation, and for how long."""

    failure_threshold: int = 5
    window_seconds: int = 60
    cooldown_seconds: float = 30.0
    probe_timeout_seconds: float = 30.0


class ProviderLimits:
    """Breaker and bucket operations for provider ids."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        policy: BreakerPolicy | None = None,
        clean_cache_seconds: float = 0.25,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.policy = policy or BreakerPolicy()
        # A provider seen healthy is trusted for a fraction of a second
        # without asking Redis again (a breaker another worker opens is seen
        # that much later; this process's own failures are seen at once).
        self._clean_cache_seconds = clean_cache_seconds
        self._clean_until: dict[object, float] = {}
        self._take = redis.register_script(_TAKE)
        self._take_many = redis.register_script(_TAKE_MANY)
        self._allow = redis.register_script(_ALLOW)
        self._fail = redis.register_script(_FAIL)
        self._succeed = redis.register_script(_SUCCEED)
        self._release = redis.register_script(_RELEASE)

    def _breaker_keys(self, provider_id: object) -> list[str]:
        base = f"{self._prefix}cb:{provider_id}"
        return [f"{base}:failures", f"{base}:open_until", f"{base}:probe"]

    async def take_token(
        self, provider_id: object, rate: float, max_wait: float, burst: float | None = None
    ) -> float | None:
        """Seconds to wait before sending (0: now), or None if longer than max_wait."""
        burst = burst if burst is not None else max(1.0, rate)
        wait = float(await self._take(keys=[f"{self._prefix}rl:{provider_id}"], args=[rate, burst, max_wait]))
        return None if wait < 0 else wait

    async def take_tokens(self, provider_id: object, rate: float, count: int, max_wait: float) -> list[float]:
        """Up to `count` tokens of the bucket `take_token` uses (each message
        of a batch counts): the seconds each granted one is due in, in
        order (0: now); fewer than `count` (or none) when the rest would
        come later than `max_wait`."""
        burst = max(1.0, rate)
        answer = await self._take_many(
            keys=[f"{self._prefix}rl:{provider_id}"], args=[rate, burst, max_wait, count]
        )
        granted, before = (answer.decode() if isinstance(answer, bytes) else answer).split()
        tokens = float(before)
        return [max(0.0, (k - tokens) / rate) for k in range(1, int(granted) + 1)]

    async def state(self, provider_id: object) -> str:
        """'clean', 'closed' (failures counted), 'probe' (this caller holds
        the half-open probe) or 'open'."""
        now = time.monotonic()
        if self._clean_until.get(provider_id, 0.0) > now:
            return "clean"
        result = await self._allow(
            keys=self._breaker_keys(provider_id), args=[int(self.policy.probe_timeout_seconds * 1000)]
        )
        state = result.decode() if isinstance(result, bytes) else result
        if state == "clean" and self._clean_cache_seconds > 0:
            self._clean_until[provider_id] = now + self._clean_cache_seconds
        return state

    async def snapshot(self, provider_id: object) -> dict[str, float | str | None]:
        """What a dashboard shows, read without side effects (unlike
        `state`, which may take the half-open probe): breaker state
        (`closed`, `open`, `half-open`), failures counted in the window,
        seconds until an open breaker is tried again, and the tokens left in
        the rate-limit bucket (None before the first send)."""
        failures_key, open_key, _ = self._breaker_keys(provider_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(failures_key)
            pipe.get(open_key)
            pipe.hget(f"{self._prefix}rl:{provider_id}", "tokens")
            pipe.time()
            failures, open_until, tokens, now_parts = await pipe.execute()
        now = float(now_parts[0]) + float(now_parts[1]) / 1e6
        reopen = float(open_until) if open_until is not None else None
        state = "closed" if reopen is None else ("open" if now < reopen else "half-open")
        return {
            "state": state,
            "failures": float(failures or 0),
            "retry_in": max(0.0, reopen - now) if reopen is not None and now < reopen else None,
            "tokens": float(tokens) if tokens is not None else None,
        }

    async def failed(self, provider_id: object, *, was_probe: bool) -> bool:
        """Record a provider failure; True when the breaker opened."""
        self._clean_until.pop(provider_id, None)
        p = self.policy
        result = await self._fail(
            keys=self._breaker_keys(provider_id),
            args=[p.failure_threshold, p.window_seconds, p.cooldown_seconds, "1" if was_probe else "0"],
        )
        return (result.decode() if isinstance(result, bytes) else result) == "opened"

    async def succeeded(self, provider_id: object) -> None:
        """Record a success: the breaker closes and the failure count resets."""
        await self._succeed(keys=self._breaker_keys(provider_id))

    async def release_probe(self, provider_id: object) -> None:
        """Give back a half-open probe that was not used: the breaker stays
        half-open and the next caller probes, instead of another cooldown."""
        await self._release(keys=self._breaker_keys(provider_id)[2:])
