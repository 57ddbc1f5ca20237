"""Reconciliation of interrupted sends (delivery/reconcile.py): messages an
earlier attempt claimed (`sending`) and never recorded are looked up at
the provider — found → `sent` with its message id and one `Email Sent`;
missing → sent now, once; lookup failing or not settled → left `sending`
(the caller retries), and `unknown` when undecidable — never sent twice.
The sender runs here against the suite's PostgreSQL and Redis and the fake
SendGrid, whose Email Activity answers from what it took in."""

from __future__ import annotations

import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import text

from delivery import service
from delivery.adapters.base import OutgoingEmail
from delivery.adapters.sendgrid import SendGridAdapter
from delivery.schemas import MessageCreate
from delivery.sender import EmailSender, RetryLater
from tests.delivery.conftest import SENDER, add_mixmax, add_sendgrid, make_template
from tests.support.fake_providers import FakeHTTPProvider
from tests.support.servers import serve
from worker.registry import build_router

CONTENT = {
    "subject": "Hi {{ profile.first_name }}",
    "html": "<html><body><p>Hello</p></body></html>",
    "text": "Hello",
    "from_email": SENDER,
    "from_name": "Team",
    "reply_to": None,
}


@pytest.fixture
async def sender(settings, engine, redis_client):
    # Looked up once claimed 30 s ago (the fake SendGrid's 3 s timeout and
    # the 2 s rate wait are less); lookups failing give up after an hour.
    tuned = settings.model_copy(
        update={"email_reconcile_settle_seconds": 30.0, "email_reconcile_give_up_seconds": 3600.0}
    )
    built = EmailSender(engine, build_router(redis_client, tuned), tuned)
    yield built
    await built.close()


async def _messages(
    sessionmaker, workspace, template_id: str, n: int, tag: str
) -> list[tuple[uuid.UUID, str]]:
    rows = []
    async with sessionmaker() as session, session.begin():
        for i in range(n):
            email = f"{tag}-{i}-{uuid.uuid4().hex[:6]}@example.com"
            row, _ = await service.create_message(
                session, workspace.workspace_id, MessageCreate(template_id=template_id, email=email)
            )
            rows.append((row["id"], email))
    return rows


async def _reach_provider(fake, messages: list[tuple[uuid.UUID, str]]) -> list[str]:
    """Deliver these messages to the fake as the dead attempt did; their X-Message-Ids."""
    adapter = SendGridAdapter(
        {"base_url": fake.base_url, "timeout": 3}, {"api_key": fake.token}, allow_private_hosts=True
    )
    try:
        return [
            await adapter.send(OutgoingEmail(message_id, email, SENDER, "Hi", "<p>Hello</p>", "Hello"))
            for message_id, email in messages
        ]
    finally:
        await adapter.close()


async def _interrupt(engine, messages: list[tuple[uuid.UUID, str]], age: float) -> None:
    """Leave the messages as a killed attempt does: claimed `age` seconds ago, never recorded."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE messages SET status = 'sending', "
                "updated_at = clock_timestamp() - make_interval(secs => :age) WHERE id = ANY(:ids)"
            ),
            {"age": age, "ids": [m for m, _ in messages]},
        )


async def _rows(engine, messages) -> dict[uuid.UUID, dict]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT m.id, m.status, m.provider_message_id, m.error, "
                "(SELECT count(*) FROM events e WHERE e.workspace_id = m.workspace_id "
                " AND e.name = 'Email Sent' AND e.properties->>'message_id' = m.id::text) AS sent_events "
                "FROM messages m WHERE m.id = ANY(:ids)"
            ),
            {"ids": [m for m, _ in messages]},
        )
        return {r.id: r._asdict() for r in rows}


def _per_address(fake) -> Counter:
    return Counter(p["to"][0]["email"] for body in fake.arrived for p in body["personalizations"])


async def _setup(api, sendgrid, sessionmaker, workspace, n: int, tag: str):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    return await _messages(sessionmaker, workspace, template["id"], n, tag)


async def test_found_recorded_sent_missing_sent_now_in_one_lookup(
    api, sendgrid, sender, engine, sessionmaker, workspace
):
    messages = await _setup(api, sendgrid, sessionmaker, workspace, 4, "batch")
    reached = messages[:2]  # the other two never reached the provider
    x_ids = await _reach_provider(sendgrid, reached)
    await _interrupt(engine, messages, age=60)

    results = await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})

    assert sorted(r.status for r in results) == ["sent"] * 4
    assert len(sendgrid.lookups) == 1, "one Email Activity call for the whole batch"
    assert _per_address(sendgrid) == {email: 1 for _, email in messages}, "nobody got two"
    rows = await _rows(engine, messages)
    for (message_id, _), x_id in zip(reached, x_ids, strict=True):
        assert rows[message_id]["provider_message_id"] == x_id
    assert all(rows[m]["status"] == "sent" and rows[m]["sent_events"] == 1 for m, _ in messages)
    # A further retry of the batch changes nothing.
    again = await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})
    assert [r.status for r in again] == ["sent"] * 4
    assert len(sendgrid.lookups) == 1 and len(sendgrid.delivered(arrived=True)) == 4
    assert all(r["sent_events"] == 1 for r in (await _rows(engine, messages)).values())


async def test_a_claim_not_settled_is_not_looked_up_yet(
    api, sendgrid, sender, engine, sessionmaker, workspace
):
    messages = await _setup(api, sendgrid, sessionmaker, workspace, 2, "young")
    await _reach_provider(sendgrid, messages[:1])
    # Accepted a moment ago, and not listed by the provider yet: asking now
    # would find the first missing and send it twice.
    sendgrid.activity_delay = 20.0
    await _interrupt(engine, messages, age=1)

    with pytest.raises(RetryLater, match="interrupted send waits"):
        await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})

    assert sendgrid.lookups == [] and len(sendgrid.arrived) == 1
    assert {r["status"] for r in (await _rows(engine, messages)).values()} == {"sending"}


@pytest.mark.parametrize("mode", ["500", "429", "hang"])
async def test_lookup_failing_leaves_them_sending_never_sends(
    api, sendgrid, sender, engine, sessionmaker, workspace, mode
):
    messages = await _setup(api, sendgrid, sessionmaker, workspace, 3, f"fail{mode}")
    await _reach_provider(sendgrid, messages[:1])
    await _interrupt(engine, messages, age=60)
    sendgrid.activity_mode = mode  # hang: the adapter's 3 s timeout ends the call

    with pytest.raises(RetryLater, match="interrupted send waits"):
        await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})

    assert len(sendgrid.lookups) == 1 and len(sendgrid.arrived) == 1
    assert {r["status"] for r in (await _rows(engine, messages)).values()} == {"sending"}
    # Past the give-up age with lookups still failing: `unknown`, still never sent again.
    await _interrupt(engine, messages, age=7200)
    results = await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})
    assert [r.status for r in results] == ["unknown"] * 3
    assert len(sendgrid.arrived) == 1
    rows = await _rows(engine, messages)
    assert all(
        "not sent again" in r["error"] and "could not be looked up" in r["error"] for r in rows.values()
    )


async def test_lookup_refused_for_good_marks_unknown_at_once(
    api, sendgrid, sender, engine, sessionmaker, workspace
):
    messages = await _setup(api, sendgrid, sessionmaker, workspace, 2, "refused")
    await _interrupt(engine, messages, age=60)
    sendgrid.activity_mode = "403"  # no Email Activity add-on, or the key lacks its permission

    results = await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})

    assert [r.status for r in results] == ["unknown", "unknown"]
    assert sendgrid.arrived == []


async def test_a_provider_without_lookup_keeps_them_unknown(
    api, sendgrid, mixmax, sender, engine, sessionmaker, workspace
):
    # The router may have failed over to MixMax after the claim, and MixMax
    # cannot be asked: undecidable, so `unknown` as before reconciliation.
    messages = await _setup(api, sendgrid, sessionmaker, workspace, 2, "blind")
    await add_mixmax(api, mixmax)
    await _interrupt(engine, messages, age=60)

    results = await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})

    assert [r.status for r in results] == ["unknown", "unknown"]
    assert sendgrid.lookups == [] and sendgrid.arrived == [] and mixmax.arrived == []
    assert all("mixmax cannot be asked" in r["error"] for r in (await _rows(engine, messages)).values())


async def test_one_message_path_reconciles_too(api, sendgrid, sender, engine, sessionmaker, workspace):
    messages = await _setup(api, sendgrid, sessionmaker, workspace, 2, "single")
    [x_id] = await _reach_provider(sendgrid, messages[:1])
    await _interrupt(engine, messages, age=60)

    found = await sender.send(workspace.workspace_id, messages[0][0])
    resent = await sender.send(workspace.workspace_id, messages[1][0])

    assert (found.status, found.provider_message_id) == ("sent", x_id)
    assert resent.status == "sent" and resent.provider_message_id != x_id
    assert _per_address(sendgrid) == {email: 1 for _, email in messages}
    assert all(r["sent_events"] == 1 for r in (await _rows(engine, messages)).values())


async def test_lookup_speaks_the_email_activity_query_and_finds_batched_requests(sendgrid):
    """The adapter's wire format, and a request carrying several
    personalizations (each with its own `mp_message_id`) found per message."""
    ids = [uuid.uuid4() for _ in range(3)]
    body = {
        "from": {"email": SENDER},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
        "personalizations": [
            {"to": [{"email": f"p{i}@example.com"}], "custom_args": {"mp_message_id": str(message_id)}}
            for i, message_id in enumerate(ids[:2])
        ],
    }
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {sendgrid.token}"}) as client:
        response = await client.post(f"{sendgrid.base_url}/v3/mail/send", json=body)
    assert response.status_code == 202
    x_id = response.headers["X-Message-Id"]
    adapter = SendGridAdapter(
        {"base_url": sendgrid.base_url, "timeout": 3}, {"api_key": sendgrid.token}, allow_private_hosts=True
    )
    try:
        result = await adapter.lookup({m: f"p{i}@example.com" for i, m in enumerate(ids)})
        # Two ids with the same recipient cannot share a call (a summary names its recipient, not our id).
        twins = await adapter.lookup({ids[0]: "p0@example.com", ids[2]: "P0@example.com"})
    finally:
        await adapter.close()
    assert result.found == {ids[0]: x_id, ids[1]: x_id} and result.missing == {ids[2]}
    assert sendgrid.lookups[0] == (f'(unique_args[\'mp_message_id\'] IN ("{ids[0]}","{ids[1]}","{ids[2]}"))')
    assert len(sendgrid.lookups) == 3
    assert twins.found == {ids[0]: x_id} and twins.missing == {ids[2]}


async def test_every_enabled_provider_is_asked_before_sending_again(
    api, sendgrid, sender, engine, sessionmaker, workspace
):
    # The router may have failed over after the claim: a message the second
    # SendGrid account took is found there; one neither has is sent again.
    second = FakeHTTPProvider(token="SG.second-key")
    async with serve(second.app()) as url:
        second.base_url = url
        messages = await _setup(api, sendgrid, sessionmaker, workspace, 2, "two")
        await add_sendgrid(api, second, priority=20, name="second")
        [x_id] = await _reach_provider(second, messages[:1])
        await _interrupt(engine, messages, age=60)

        results = await sender.send_batch(workspace.workspace_id, [m for m, _ in messages], CONTENT, {})

    assert [r.status for r in results] == ["sent", "sent"]
    assert (await _rows(engine, messages))[messages[0][0]]["provider_message_id"] == x_id
    assert _per_address(sendgrid) == {messages[1][1]: 1} and _per_address(second) == {messages[0][1]: 1}
    assert len(sendgrid.lookups) == 1 and len(second.lookups) == 1
