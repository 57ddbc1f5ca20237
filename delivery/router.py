"""The provider router: priority order, failover, circuit breakers and
shared rate limits.

For each message the router walks the workspace's enabled providers by
priority (lowest number first). It skips a provider whose breaker is open
(letting one probe through after the cooldown), waits for a rate-limit
token when one comes soon (else moves on), and sends. A retryable failure
counts against the provider's breaker and moves on to the next provider;
a permanent failure stops the walk: the message itself was refused, and
another provider would refuse it too.

`send_many` routes a batch the same way (a campaign's): the provider's
batch interface when its adapter has one (`send_many`), else its messages
one `send` each, several in flight. Every message takes a rate-limit
token; a batch that fails retryably (or the messages of it that did) goes
on to the next provider, and the messages it accepted or refused stay
where they are. A retryable failure counts once per provider call against
the breaker (one request failing is one failure, however many messages it
carried).

Breakers and buckets live in Redis. When Redis cannot be reached before a
provider is called, the walk stops with `LimitsUnavailable` (nothing was
sent, so the message can wait and be retried); once a provider has been
called, a Redis error while recording the outcome is logged and dropped,
so an accepted message is never reported as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    def batch_size(self, providers: Sequence[ProviderConfig]) -> int | None:
        """Messages a batch request of the first provider in order takes
        (its adapter's `batch_size`), None when it has no batch interface."""
        enabled = sorted((p for p in providers if p.enabled), key=lambda p: (p.priority, p.name))
        if not enabled:
            return None
        return getattr(self.adapter(enabled[0]), "batch_size", None)

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

    async def send_many(
        self,
        providers: Sequence[ProviderConfig],
        emails: Sequence[OutgoingEmail],
        claim: Callable[[list[OutgoingEmail]], Awaitable[set[uuid.UUID]]] | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> list[Delivery | Exception]:
        """Deliver a batch; one result per message, in order: its Delivery,
        or the exception `send` would have raised for it (PermanentFailure,
        NoProviderAvailable, LimitsUnavailable, ClaimLost). `claim` is
        awaited with the messages about to go to a provider for the first
        time and returns the ids this attempt owns. `slots` bounds provider
        calls in flight (one per request)."""
        results: dict[uuid.UUID, Delivery | Exception] = {}
        attempts: dict[uuid.UUID, list[Attempt]] = {e.message_id: [] for e in emails}
        claimed: set[uuid.UUID] = set()
        pending = list(emails)
        for provider in sorted((p for p in providers if p.enabled), key=lambda p: (p.priority, p.name)):
            if not pending:
                break
            try:
                state, delays = await self._admit_many(provider, pending, attempts)
            except REDIS_DOWN as exc:
                for email in pending:
                    results[email.message_id] = LimitsUnavailable(
                        f"Redis is unreachable: {exc}", attempts[email.message_id]
                    )
                pending = []
                break
            if state is None:
                continue
            batch, pending = pending[: len(delays)], pending[len(delays) :]
            adapter = self.adapter(provider)
            if hasattr(adapter, "send_many") and delays[-1] > 0:
                # One request for all: wait for its last token while the
                # messages are still unclaimed (an attempt that stops here
                # leaves them queued, as for one message).
                await asyncio.sleep(delays[-1])
                delays = [0.0] * len(delays)
            fresh = [e for e in batch if e.message_id not in claimed]
            if claim is not None and fresh:
                owned = await claim(fresh)
                claimed |= owned
                for email in fresh:
                    if email.message_id not in owned:
                        results[email.message_id] = ClaimLost(email.message_id)
                keep = [i for i, e in enumerate(batch) if e.message_id not in results]
                batch, delays = [batch[i] for i in keep], [delays[i] for i in keep]
            if not batch:
                if state == "probe":
                    await self._record(self._limits.release_probe(provider.id))
                continue
            outcomes = await self._deliver(adapter, batch, delays, slots)
            failed_over: list[OutgoingEmail] = []
            answered = False
            reasons: list[str] = []
            for email, outcome in zip(batch, outcomes, strict=True):
                tried = attempts[email.message_id]
                if isinstance(outcome, str):
                    answered = True
                    tried.append(Attempt(provider.name, "sent", outcome))
                    results[email.message_id] = Delivery(provider.id, provider.kind, outcome, tried)
                elif not outcome.retryable:
                    answered = True
                    tried.append(Attempt(provider.name, "refused", outcome.reason))
                    results[email.message_id] = PermanentFailure(outcome.reason, tried)
                else:
                    tried.append(Attempt(provider.name, "failed", outcome.reason))
                    failed_over.append(email)
                    reasons.append(outcome.reason)
            if failed_over:
                opened = await self._record(
                    self._limits.failed(provider.id, was_probe=state == "probe" and not answered)
                )
                log.warning(
                    "provider %s failed for %d of %d messages%s: %s",
                    provider.name,
                    len(failed_over),
                    len(batch),
                    " (breaker opened)" if opened else "",
                    reasons[0],
                )
            elif state != "clean":
                await self._record(self._limits.succeeded(provider.id))
            pending = failed_over + pending
        for email in pending:
            results[email.message_id] = NoProviderAvailable(attempts[email.message_id])
        return [results[e.message_id] for e in emails]

    async def _admit_many(
        self, provider: ProviderConfig, pending: list[OutgoingEmail], attempts: dict[uuid.UUID, list[Attempt]]
    ) -> tuple[str | None, list[float]]:
        """`_admit` for a batch: the breaker state and, for the first
        messages of `pending` that may go to this provider now, the seconds
        each must wait for its rate-limit token (state None: none may). The
        others have the skip recorded."""
        state = await self._limits.state(provider.id)
        if state == "open":
            for email in pending:
                attempts[email.message_id].append(
                    Attempt(provider.name, "skipped-open", "circuit breaker open")
                )
            return None, []
        if not provider.rate_limit:
            return state, [0.0] * len(pending)
        delays = await self._limits.take_tokens(
            provider.id, provider.rate_limit, len(pending), self._max_rate_wait
        )
        for email in pending[len(delays) :]:
            attempts[email.message_id].append(
                Attempt(provider.name, "skipped-rate-limit", f"over {provider.rate_limit}/s")
            )
        if not delays:
            if state == "probe":
                await self._limits.release_probe(provider.id)
            return None, []
        return state, delays

    async def _deliver(
        self,
        adapter: Adapter,
        batch: list[OutgoingEmail],
        delays: list[float],
        slots: asyncio.Semaphore | None,
    ) -> list[str | ProviderError]:
        """Each message's provider message id or ProviderError: through the
        adapter's batch interface, else one `send` each at its own token's
        time (claimed already: pacing within `max_rate_wait`)."""
        slot = slots or contextlib.nullcontext()
        send_many = getattr(adapter, "send_many", None)
        if send_many is not None:
            async with slot:
                return list(await send_many(batch))

        async def one(email: OutgoingEmail, delay: float) -> str | ProviderError:
            if delay > 0:
                await asyncio.sleep(delay)
            async with slot:
                try:
                    return await adapter.send(email)
                except ProviderError as exc:
                    return exc

        return list(await asyncio.gather(*(one(e, d) for e, d in zip(batch, delays, strict=True))))

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
