"""The router's breaker and rate limit on real Redis, without the worker:
what a half-open probe does when the rate limit says "not now"."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from delivery.adapters import OutgoingEmail
from delivery.limits import BreakerPolicy, ProviderLimits
from delivery.router import NoProviderAvailable, ProviderConfig, ProviderRouter


def _email(n: int) -> OutgoingEmail:
    return OutgoingEmail(
        uuid.uuid4(), f"limits-{n}@example.com", "sender@example.com", "Hi", "<p>hi</p>", "hi"
    )


async def test_rate_limit_skip_during_probe_releases_the_probe(sendgrid, redis_client, settings):
    cooldown, rate = 4.0, 2.0
    limits = ProviderLimits(
        redis_client,
        f"{settings.redis_prefix}limits-{uuid.uuid4().hex[:8]}:",
        BreakerPolicy(failure_threshold=1, cooldown_seconds=cooldown),
        clean_cache_seconds=0,
    )
    router = ProviderRouter(limits, max_rate_wait=0, allow_private_hosts=True)  # the fake is on 127.0.0.1
    provider = ProviderConfig(
        id=uuid.uuid4(),
        name="sendgrid",
        kind="sendgrid",
        priority=1,
        rate_limit=rate,
        enabled=True,
        settings={"base_url": sendgrid.base_url, "timeout": 3},
        secrets={"api_key": sendgrid.token},
    )
    try:
        # One failure opens the breaker (threshold 1).
        sendgrid.mode = "500"
        with pytest.raises(NoProviderAvailable):
            await router.send([provider], _email(0))
        assert await limits.state(provider.id) == "open"
        # Spend the bucket ahead (other workers' sends), so that when the
        # cooldown ends the limit still says "not now": 1 - 10 + 2/s * 4.1 s
        # = -0.8 tokens then; 1 token again 0.9 s later.
        for _ in range(10):
            assert await limits.take_token(provider.id, rate, max_wait=100) is not None
        await asyncio.sleep(cooldown + 0.1)

        sendgrid.mode = "ok"
        with pytest.raises(NoProviderAvailable) as skipped:
            await router.send([provider], _email(1))
        assert [a.outcome for a in skipped.value.attempts] == ["skipped-rate-limit"]
        assert sendgrid.requests == 1, "the skipped probe must not reach the provider"

        # The probe was given back, not counted as a failure: once a token is
        # there (well within another cooldown) the next message probes and
        # closes the breaker.
        await asyncio.sleep(1.2)
        delivered = await router.send([provider], _email(2))
        assert [a.outcome for a in delivered.attempts] == ["sent"]
        assert len(sendgrid.received) == 1
        assert await limits.state(provider.id) == "clean"
    finally:
        await router.close()
