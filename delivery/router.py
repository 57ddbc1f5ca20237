"""The provider router: priority order, failover, circuit breakers and
shared rate limits.

For each message the router walks the workspace's enabled providers by
priority (lowest number first). It skips a provider whose breaker is open
(letting one probe through after the cooldown), waits for a rate-limit
token when one comes soon (else moves on), and sends. A retryable failure
counts against the provider's breaker and moves on to the next provider;
a permanent failure stops the walk: the message itself was refused, and
another provider would refuse it too.

Breakers and buckets live in Redis. When Redis cannot be reached before a
provider is called, the walk stops with `LimitsUnavailable` (nothing was
sent, so the message can wait and be retried); once a provider has been
called, a Redis error while recording the outcome is logged and dropped,
so an accepted message is never reported as failed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from delivery.adapters import Adapter, OutgoingEmail, ProviderError, build_adapter
from delivery.adapters.base import ProviderLookup
from delivery.limits import ProviderLimits

log = logging.getLogger(__name__)

# Redis unreachable, timing out, or still loading its data after a restart.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


@dataclass(frozen=True)
class ProviderConfig:
    """A provider as the router needs it."""

    id: uuid.UUID
    name: str
    kind: str
    priority: int
    rate_limit: float | None
    enabled: bool
    settings: dict[str, Any]
    secrets: dict[str, Any]
    version: str = ""  # changes when the row changes, to rebuild clients


@dataclass
class Attempt:
    """One provider tried for a message."""

    provider: str
    outcome: str  # sent | failed | refused | skipped-open | skipped-rate-limit
    detail: str = ""


@dataclass
class Delivery:
    """A message a provider accepted."""

    provider_id: uuid.UUID
    provider_kind: str
    provider_message_id: str
    attempts: list[Attempt] = field(default_factory=list)


class PermanentFailure(Exception):
    """The message was refused; no provider will take it."""

    def __init__(self, reason: str, attempts: list[Attempt]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class NoProviderAvailable(Exception):
    """Every provider failed, is open or rate-limited; try again later."""

    def __init__(self, attempts: list[Attempt]) -> None:
        summary = (
            "; ".join(f"{a.provider}: {a.outcome} {a.detail}".strip() for a in attempts) or "no providers"
        )
        super().__init__(summary)
        self.attempts = attempts


class LimitsUnavailable(Exception):
    """Breakers and rate limits could not be read (Redis is unreachable);
    no provider was called for this message."""

    def __init__(self, reason: str, attempts: list[Attempt]) -> None:
        super().__init__(reason)
        self.attempts = attempts


class ClaimLost(Exception):
    """Another attempt claimed the message first; this one called no provider."""


class ProviderRouter:
    """Routes messages over providers; adapters (and their HTTP clients)
    are built once per provider version and reused."""

    def __init__(
        self, limits: ProviderLimits, *, max_rate_wait: float = 2.0, allow_private_hosts: bool = False
    ) -> None:
        self._limits = limits
        self._max_rate_wait = max_rate_wait
        self._allow_private_hosts = allow_private_hosts
        self._adapters: dict[uuid.UUID, tuple[str, Adapter]] = {}

    def adapter(self, provider: ProviderConfig) -> Adapter:
        """The adapter for a provider, rebuilt when its settings changed."""
        cached = self._adapters.get(provider.id)
        if cached is not None and cached[0] == provider.version:
            return cached[1]
        adapter = build_adapter(
            provider.kind, provider.settings, provider.secrets, allow_private_hosts=self._allow_private_hosts
        )
        self._adapters[provider.id] = (provider.version, adapter)
        return adapter

    @property
    def max_rate_wait(self) -> float:
        """Longest wait for a rate-limit token before a provider is skipped."""
        return self._max_rate_wait

    def lookup(self, provider: ProviderConfig) -> ProviderLookup | None:
        """The provider's adapter when it can look up our messages, else None."""
        adapter = self.adapter(provider)
        return adapter if isinstance(adapter, ProviderLookup) else None

    async def send(
        self,
        providers: Sequence[ProviderConfig],
        email: OutgoingEmail,
        claim: Callable[[], Awaitable[bool]] | None = None,
    ) -> Delivery:
        """Deliver through the first provider that accepts. `claim` is
        awaited once, just before the first provider call (after breaker and
        rate-limit checks): False means another attempt owns the message,
        and `ClaimLost` is raised without calling a provider."""
        attempts: list[Attempt] = []
        claimed = claim is None
        for provider in sorted((p for p in providers if p.enabled), key=lambda p: (p.priority, p.name)):
            try:
                state = await self._admit(provider, attempts)
            except REDIS_DOWN as exc:
                raise LimitsUnavailable(f"Redis is unreachable: {exc}", attempts) from None
            if state is None:
                continue
            if not claimed:
                assert claim is not None
                claimed = await claim()
                if not claimed:
                    if state == "probe":
                        await self._record(self._limits.release_probe(provider.id))
                    raise ClaimLost(email.message_id)
            try:
                provider_message_id = await self.adapter(provider).send(email)
            except ProviderError as exc:
                if not exc.retryable:
                    # The provider answered, so it is healthy: a probe closes the breaker.
                    await self._record(self._limits.succeeded(provider.id))
                    attempts.append(Attempt(provider.name, "refused", exc.reason))
                    raise PermanentFailure(exc.reason, attempts) from None
                opened = await self._record(self._limits.failed(provider.id, was_probe=state == "probe"))
                attempts.append(
                    Attempt(provider.name, "failed", exc.reason + (" (breaker opened)" if opened else ""))
                )
                log.warning("provider %s failed for %s: %s", provider.name, email.message_id, exc.reason)
                continue
            if state != "clean":  # nothing to reset otherwise: saves a round trip per message
                await self._record(self._limits.succeeded(provider.id))
            attempts.append(Attempt(provider.name, "sent", provider_message_id))
            return Delivery(provider.id, provider.kind, provider_message_id, attempts)
        raise NoProviderAvailable(attempts)

    async def _admit(self, provider: ProviderConfig, attempts: list[Attempt]) -> str | None:
        """The breaker state when the provider may be called now (after any
        short rate-limit wait), else None with the skip recorded."""
        state = await self._limits.state(provider.id)
        if state == "open":
            attempts.append(Attempt(provider.name, "skipped-open", "circuit breaker open"))
            return None
        if provider.rate_limit:
            wait = await self._limits.take_token(provider.id, provider.rate_limit, self._max_rate_wait)
            if wait is None:
                attempts.append(Attempt(provider.name, "skipped-rate-limit", f"over {provider.rate_limit}/s"))
                if state == "probe":
                    # Not a verdict on the provider's health: let the next message probe.
                    await self._limits.release_probe(provider.id)
                return None
            if wait > 0:
                await asyncio.sleep(wait)
        return state

    @staticmethod
    async def _record(outcome: Awaitable[Any]) -> Any:
        # After a provider call the message's fate is known; losing one
        # breaker update to a Redis outage must not change it.
        try:
            return await outcome
        except REDIS_DOWN as exc:
            log.warning("breaker update lost, Redis is unreachable: %s", exc)
            return None

    async def close(self) -> None:
        """Close every adapter's clients."""
        for _, adapter in self._adapters.values():
            await adapter.close()
        self._adapters.clear()
