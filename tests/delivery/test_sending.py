"""Sending through the router: failover, breakers, permanent errors,
suppression, idempotency, and each provider's real wire format."""

from __future__ import annotations

import asyncio
import email as email_lib

from sqlalchemy import text

from tests.delivery.conftest import (
    add_mixmax,
    add_provider,
    add_sendgrid,
    make_template,
    send,
    ses_sent_messages,
)
from tests.support.servers import free_port


async def _events(engine, workspace, name: str) -> int:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT count(*) FROM events WHERE workspace_id = :ws AND name = :n"),
                {"ws": workspace.workspace_id, "n": name},
            )
        ).scalar()


async def test_sendgrid_sends_with_tracking_and_unsubscribe_headers(api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    message = await send(api, template["id"], "ada@example.com", data={"code": "X1"})
    assert message["status"] == "sent", message
    assert message["provider"] == "sendgrid" and message["provider_message_id"]
    assert [e["name"] for e in message["events"]] == ["Email Sent"]

    [payload] = sendgrid.received
    assert payload["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert payload["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        payload["headers"]["List-Unsubscribe"].startswith("<http")
        and "/u/" in payload["headers"]["List-Unsubscribe"]
    )
    assert payload["custom_args"]["mp_message_id"] == message["id"]
    html = next(c["value"] for c in payload["content"] if c["type"] == "text/html")
    assert "code X1" in html and "shop.example.com" not in html and "/c/" in html and "/o/" in html
    text_part = next(c["value"] for c in payload["content"] if c["type"] == "text/plain")
    assert "code X1" in text_part
    assert await _events(engine, workspace, "Email Sent") == 1


async def test_primary_down_secondary_delivers_each_once(api, worker, mixmax, engine, workspace):
    # The primary's port has nothing listening: connection refused.
    await add_provider(
        api,
        "down",
        "sendgrid",
        1,
        settings={"base_url": f"http://127.0.0.1:{free_port()}", "timeout": 2},
        credentials={"api_key": "k"},
    )
    await add_mixmax(api, mixmax)
    template = await make_template(api)
    results = await asyncio.gather(*(send(api, template["id"], f"user{n}@example.com") for n in range(5)))
    assert all(r["status"] == "sent" and r["provider"] == "mixmax" for r in results), results
    assert sorted(m["to"][0]["address"] for m in mixmax.received) == sorted(
        f"user{n}@example.com" for n in range(5)
    )
    assert await _events(engine, workspace, "Email Sent") == 5
    assert results[0]["attempts"][0]["provider"] == "down" and results[0]["attempts"][0]["outcome"] in (
        "failed",
        "skipped-open",
    )


async def test_breaker_opens_skips_half_opens_and_closes(api, worker, sendgrid, mixmax, settings):
    await add_sendgrid(api, sendgrid, priority=1)
    await add_mixmax(api, mixmax)
    template = await make_template(api)
    sendgrid.mode = "500"
    for n in range(settings.breaker_failure_threshold):
        assert (await send(api, template["id"], f"a{n}@example.com"))["provider"] == "mixmax"
    assert sendgrid.requests == settings.breaker_failure_threshold
    # Open: SendGrid is not even tried.
    skipped = await send(api, template["id"], "skip@example.com")
    assert skipped["provider"] == "mixmax" and skipped["attempts"][0]["outcome"] == "skipped-open"
    assert sendgrid.requests == settings.breaker_failure_threshold
    # After the cooldown one probe goes through; SendGrid has recovered, so it closes.
    sendgrid.mode = "ok"
    await asyncio.sleep(settings.breaker_cooldown_seconds + 0.2)
    probe = await send(api, template["id"], "probe@example.com")
    assert probe["provider"] == "sendgrid"
    closed = await send(api, template["id"], "after@example.com")
    assert closed["provider"] == "sendgrid" and closed["attempts"][0]["outcome"] == "sent"


async def test_probe_failure_reopens(api, worker, sendgrid, mixmax, settings):
    await add_sendgrid(api, sendgrid, priority=1)
    await add_mixmax(api, mixmax)
    template = await make_template(api)
    sendgrid.mode = "503"
    for n in range(settings.breaker_failure_threshold):
        await send(api, template["id"], f"b{n}@example.com")
    await asyncio.sleep(settings.breaker_cooldown_seconds + 0.2)
    before = sendgrid.requests
    await send(api, template["id"], "probe@example.com")  # the probe fails
    assert sendgrid.requests == before + 1
    again = await send(api, template["id"], "again@example.com")
    assert again["attempts"][0]["outcome"] == "skipped-open" and sendgrid.requests == before + 1


async def test_permanent_error_does_not_fail_over(api, worker, sendgrid, mixmax):
    await add_sendgrid(api, sendgrid, priority=1)
    await add_mixmax(api, mixmax)
    template = await make_template(api)
    sendgrid.mode = "400"
    message = await send(api, template["id"], "bad@example.com")
    assert message["status"] == "failed" and "400" in message["error"]
    assert mixmax.requests == 0
    assert [a["outcome"] for a in message["attempts"]] == ["refused"]


async def test_suppressed_address_is_never_sent(api, worker, sendgrid):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    await api.post("/api/v1/suppressions", json={"email": "NoMore@example.com", "reason": "manual"})
    message = await send(api, template["id"], "nomore@example.com")
    assert message["status"] == "suppressed" and sendgrid.requests == 0


async def test_idempotency_key_sends_once(api, worker, sendgrid):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    first = await send(api, template["id"], "once@example.com", idempotency_key="order-77-receipt")
    second = await send(api, template["id"], "once@example.com", idempotency_key="order-77-receipt")
    assert first["id"] == second["id"] and second["status"] == "sent"
    assert len(sendgrid.received) == 1


async def test_no_provider_available_retries_until_one_is(api, worker, sendgrid):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    sendgrid.mode = "429"
    queued = await send(api, template["id"], "later@example.com", wait=1.5)
    assert queued["status"] == "queued" and "429" in (queued["error"] or "")
    sendgrid.mode = "ok"
    for _ in range(60):
        now = (await api.get(f"/api/v1/messages/{queued['id']}")).json()
        if now["status"] == "sent":
            break
        await asyncio.sleep(0.5)
    assert now["status"] == "sent" and len(sendgrid.received) == 1


async def test_ses_through_moto_server(api, worker, moto_ses):
    await add_provider(
        api,
        "ses",
        "ses",
        1,
        settings={"region": "us-east-1", "endpoint_url": moto_ses},
        credentials={"access_key_id": "test", "secret_access_key": "test"},
    )
    template = await make_template(api)
    before = len(ses_sent_messages())
    message = await send(api, template["id"], "ses-user@example.com", data={"code": "S3"})
    assert message["status"] == "sent" and message["provider"] == "ses", message
    raw = ses_sent_messages()[before]
    parsed = email_lib.message_from_string(raw.raw_data)
    assert (
        parsed["To"] == "ses-user@example.com"
        and parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    )
    assert raw.id == message["provider_message_id"]


async def test_ses_rejection_is_permanent(api, worker, moto_ses, mixmax):
    await add_provider(
        api,
        "ses",
        "ses",
        1,
        settings={"region": "us-east-1", "endpoint_url": moto_ses},
        credentials={"access_key_id": "test", "secret_access_key": "test"},
    )
    await add_mixmax(api, mixmax)
    template = await make_template(api, from_email="unverified@elsewhere.example")
    message = await send(api, template["id"], "x@example.com")
    assert message["status"] == "failed" and "MessageRejected" in message["error"]
    assert mixmax.requests == 0


async def test_smtp_delivers_and_classifies_refusals(api, worker, smtp_server, mixmax):
    recorder, port = smtp_server
    await add_provider(api, "smtp", "smtp", 1, settings={"host": "127.0.0.1", "port": port, "timeout": 5})
    await add_mixmax(api, mixmax)
    template = await make_template(api)
    ok = await send(api, template["id"], "smtp-user@example.com")
    assert ok["status"] == "sent" and ok["provider"] == "smtp"
    [envelope] = recorder.messages
    parsed = email_lib.message_from_bytes(envelope.content)
    assert envelope.rcpt_tos == ["smtp-user@example.com"] and parsed["List-Unsubscribe"]

    recorder.reject = "451 4.3.0 try again later"  # transient: the next provider takes it
    assert (await send(api, template["id"], "soft@example.com"))["provider"] == "mixmax"
    recorder.reject = "550 5.1.1 no such user"  # permanent: no failover
    hard = await send(api, template["id"], "nobody@example.com")
    assert hard["status"] == "failed" and "550" in hard["error"] and mixmax.requests == 1


async def test_hanging_primary_times_out_and_fails_over(api, worker, sendgrid, mixmax):
    await add_provider(
        api,
        "slow",
        "sendgrid",
        1,
        settings={"base_url": sendgrid.base_url, "timeout": 1},
        credentials={"api_key": sendgrid.token},
    )
    await add_mixmax(api, mixmax)
    template = await make_template(api)
    sendgrid.mode = "hang"
    message = await send(api, template["id"], "patient@example.com")
    assert message["status"] == "sent" and message["provider"] == "mixmax", message
    assert message["attempts"][0]["outcome"] == "failed" and "timed out" in message["attempts"][0]["detail"]
    assert len(mixmax.received) == 1
