"""The batch path of the router and the SendGrid adapter (what a campaign
uses), against the fake SendGrid server and real Redis: each message
arrives once with exactly its own content; a failing batch goes on to the
next provider only for the messages not accepted; every message takes a
rate-limit token; one failed request counts once against the breaker."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from delivery.adapters import OutgoingEmail
from delivery.adapters.sendgrid import SendGridAdapter
from delivery.adapters.shared_body import fit, share, skeleton
from delivery.limits import BreakerPolicy, ProviderLimits
from delivery.router import (
    ClaimLost,
    Delivery,
    NoProviderAvailable,
    PermanentFailure,
    ProviderConfig,
    ProviderRouter,
)


def _email(
    n: int, *, name: str | None = None, vip: bool = False, sender: str = "news@example.com"
) -> OutgoingEmail:
    message_id = uuid.uuid4()
    first = name if name is not None else f"P{n}"
    extra = "<p>You are a VIP: 30% more.</p>" if vip else ""
    html = (
        f"<html><body><h1>Hello {first}</h1>{extra}<p>Spring sale until Sunday. 20% off everything.</p>"
        f'<a href="https://t.example/c/{message_id.hex}0">Shop</a> '
        f'<a href="https://t.example/u/{message_id.hex}">Unsubscribe</a>'
        f'<img src="https://t.example/o/{message_id.hex}.gif"></body></html>'
    )
    return OutgoingEmail(
        message_id=message_id,
        to=f"batch-{n}@example.com",
        from_email=sender,
        from_name="Shop",
        subject=f"Sale for {first}",
        html=html,
        text=f"Hello {first}\nSpring sale until Sunday.\nUnsubscribe: https://t.example/u/{message_id.hex}\n",
        headers={
            "List-Unsubscribe": f"<https://t.example/u/{message_id.hex}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def _provider(fake, name: str, priority: int, rate_limit: float | None = None) -> ProviderConfig:
    return ProviderConfig(
        id=uuid.uuid4(),
        name=name,
        kind="sendgrid",
        priority=priority,
        rate_limit=rate_limit,
        enabled=True,
        settings={"base_url": fake.base_url, "timeout": 5},
        secrets={"api_key": fake.token},
    )


def _as_sent(email: OutgoingEmail) -> dict:
    return {
        "to": email.to,
        "subject": email.subject,
        "html": email.html,
        "text": email.text,
        "headers": email.headers,
        "custom_args": {"mp_message_id": str(email.message_id)},
    }


@pytest.fixture
async def limits(redis_client, settings):
    return ProviderLimits(
        redis_client,
        f"{settings.redis_prefix}batch-{uuid.uuid4().hex[:8]}:",
        BreakerPolicy(failure_threshold=2),
        clean_cache_seconds=0,
    )


@pytest.fixture
async def router(limits):
    router = ProviderRouter(limits, max_rate_wait=0, allow_private_hosts=True)  # the fakes are local
    yield router
    await router.close()


def test_a_shared_body_rebuilds_every_message_exactly():
    emails = [
        _email(i, name=["Ann", "Bob Smith", "Zoë", "", "O'Brien & Co"][i % 5], vip=i % 7 == 0)
        for i in range(300)
    ]
    parts = [(e.html, e.text) for e in emails]
    bodies, kept = share(parts, 10_000)
    assert kept == list(range(300))
    for j, i in enumerate(kept):
        for part, body in enumerate(bodies):
            out = body.template
            for key, value in body.values[j].items():
                out = out.replace(key, value)
            assert out == parts[i][part]
    # The body is shared: what differs per person is small.
    assert "Spring sale until Sunday. 20% off everything." in bodies[0].template
    assert max(sum(len(v) for v in values.values()) for values in bodies[0].values) < 200
    # Leftmost fitting: pieces found in order, the holes between them.
    pieces = skeleton(["<p>Hi Ann, welcome back</p>", "<p>Hi Bob, welcome back</p>"])
    assert fit("<p>Hi Zoë, welcome back</p>", pieces) is not None
    assert fit("<p>Goodbye</p>", pieces) is None


async def test_personalizations_deliver_each_message_once_with_its_own_content(sendgrid):
    emails = [_email(i, vip=i % 5 == 0) for i in range(1200)]
    # Some that share no body with the rest go one request each.
    emails += [_email(1200 + i) for i in range(3)]
    for odd in emails[-3:]:
        odd.html = f"<div>{uuid.uuid4().hex} entirely different {odd.to}</div>"
    adapter = SendGridAdapter(
        {"base_url": sendgrid.base_url}, {"api_key": sendgrid.token}, allow_private_hosts=True
    )
    try:
        results = await adapter.send_many(emails)
    finally:
        await adapter.close()
    assert all(isinstance(r, str) for r in results)
    delivered = sendgrid.delivered()
    assert sorted(delivered, key=lambda m: m["to"]) == sorted(
        (_as_sent(e) for e in emails), key=lambda m: m["to"]
    )
    # 1,200 of one body: two requests (at most 1,000 personalizations each),
    # plus one each for the three that fit no body.
    sizes = sorted(len(body["personalizations"]) for body in sendgrid.received)
    assert len(sendgrid.received) <= 6 and sizes[-1] <= 1000 and sum(sizes) == len(emails)
    batch = next(body for body in sendgrid.received if len(body["personalizations"]) > 1)
    assert batch["from"] == {"email": "news@example.com", "name": "Shop"}
    assert [c["type"] for c in batch["content"]] == ["text/plain", "text/html"]
    assert batch["tracking_settings"]["click_tracking"]["enable"] is False


async def test_an_address_twice_goes_in_separate_requests(sendgrid):
    emails = [_email(i) for i in range(4)]
    emails[3].to = emails[0].to.upper()
    adapter = SendGridAdapter(
        {"base_url": sendgrid.base_url}, {"api_key": sendgrid.token}, allow_private_hosts=True
    )
    try:
        await adapter.send_many(emails)
    finally:
        await adapter.close()
    for body in sendgrid.received:
        addresses = [p["to"][0]["email"].lower() for p in body["personalizations"]]
        assert len(addresses) == len(set(addresses))
    assert len(sendgrid.delivered()) == 4


async def test_a_failing_batch_fails_over_only_what_was_not_accepted(router, limits, sendgrid, mixmax):
    primary, secondary = _provider(sendgrid, "primary", 10), _provider(mixmax, "secondary", 20)
    first = [_email(i) for i in range(300)]
    claims: list[uuid.UUID] = []

    async def claim(batch: list[OutgoingEmail]) -> set[uuid.UUID]:
        claims.extend(e.message_id for e in batch)
        return {e.message_id for e in batch}

    answers = await router.send_many([primary, secondary], first, claim)
    assert all(isinstance(a, Delivery) and a.provider_id == primary.id for a in answers)
    sendgrid.mode = "500"
    second = [_email(300 + i) for i in range(300)]
    answers = await router.send_many([primary, secondary], second, claim)
    assert all(isinstance(a, Delivery) and a.provider_id == secondary.id for a in answers)
    assert [a.outcome for a in answers[0].attempts] == ["failed", "sent"]
    # Each message claimed once, before its first provider call; none lost or sent twice.
    assert sorted(claims) == sorted(e.message_id for e in first + second)
    assert {m["to"] for m in sendgrid.delivered()} == {e.to for e in first}
    assert {m["to"] for m in mixmax.delivered()} == {e.to for e in second}
    # One failed request is one failure for the breaker (threshold 2: still closed).
    assert await limits.state(primary.id) == "closed"


async def test_refused_batch_and_lost_claims(router, sendgrid):
    primary = _provider(sendgrid, "primary", 10)
    emails = [_email(i) for i in range(10)]

    async def claim(batch: list[OutgoingEmail]) -> set[uuid.UUID]:
        return {e.message_id for e in batch[2:]}  # another attempt owns the first two

    sendgrid.mode = "400"
    answers = await router.send_many([primary], emails, claim)
    assert all(isinstance(a, ClaimLost) for a in answers[:2])
    assert all(isinstance(a, PermanentFailure) for a in answers[2:])
    # Refused as a whole, then one request each so each gets its own answer;
    # nothing goes to another provider.
    assert sendgrid.requests == 1 + 8


async def test_rate_limit_counts_every_message(router, limits, sendgrid, mixmax):
    rate = 5.0  # a burst of 5 tokens, and max_rate_wait 0: no waiting
    primary = _provider(sendgrid, "primary", 10, rate_limit=rate)
    secondary = _provider(mixmax, "secondary", 20)
    emails = [_email(i) for i in range(12)]
    started = time.monotonic()
    answers = await router.send_many([primary, secondary], emails)
    by_provider = [a.provider_id for a in answers if isinstance(a, Delivery)]
    assert by_provider.count(primary.id) == 5 and by_provider.count(secondary.id) == 7
    assert len(sendgrid.delivered()) == 5 and len(mixmax.delivered()) == 7
    skipped = answers[-1].attempts[0]
    assert skipped.outcome == "skipped-rate-limit"
    # The bucket is spent: what is in it now came back since (5 a second).
    tokens = (await limits.snapshot(primary.id))["tokens"]
    assert tokens is not None and tokens <= (time.monotonic() - started) * rate + 1e-6
    # Alone, with nowhere else to go: NoProviderAvailable for each message
    # (a slow bucket, spent just before: its next token is 2 s away).
    slow = _provider(sendgrid, "slow", 10, rate_limit=0.5)
    assert await limits.take_token(slow.id, 0.5, max_wait=0) == 0
    answers = await router.send_many([slow], [_email(100), _email(101)])
    assert all(isinstance(a, NoProviderAvailable) for a in answers)


async def test_rate_limit_waits_paced_within_max_wait(limits):
    provider_id = uuid.uuid4()
    delays = await limits.take_tokens(provider_id, 10.0, 25, max_wait=1.0)
    # 10 now (the burst), 10 more within the second, the rest refused.
    assert len(delays) == 20
    assert delays[:10] == [0.0] * 10
    assert delays[10:] == sorted(delays[10:]) and delays[10] > 0 and delays[-1] <= 1.0 + 1e-6


async def test_ses_batch_goes_as_concurrent_sends_paced_by_its_rate(limits, moto_ses):
    import email as email_lib

    from tests.delivery.conftest import SENDER, ses_sent_messages

    ses = ProviderConfig(
        id=uuid.uuid4(),
        name="ses",
        kind="ses",
        priority=1,
        rate_limit=20.0,
        enabled=True,
        settings={"region": "us-east-1", "endpoint_url": moto_ses},
        secrets={"access_key_id": "test", "secret_access_key": "test"},
    )
    paced = ProviderRouter(limits, max_rate_wait=5.0, allow_private_hosts=True)
    emails = [_email(i, sender=SENDER) for i in range(40)]
    before = len(ses_sent_messages())
    started = time.monotonic()
    try:
        answers = await paced.send_many([ses], emails, slots=asyncio.Semaphore(8))
    finally:
        await paced.close()
    elapsed = time.monotonic() - started
    assert all(isinstance(a, Delivery) for a in answers)
    sent = ses_sent_messages()[before:]
    addresses = sorted(email_lib.message_from_string(m.raw_data)["To"] for m in sent)
    assert addresses == sorted(e.to for e in emails)
    assert {a.provider_message_id for a in answers} == {m.id for m in sent}
    # 20 a second with a burst of 20: the second 20 wait for their tokens.
    assert elapsed >= 0.9
