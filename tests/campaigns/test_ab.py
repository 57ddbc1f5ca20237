"""A/B tests of campaigns: validation, the winner chosen after a durable
timer (skipped ahead with Temporal's per-workflow time skipping on the
suite's dev server), opens driven through the real tracking endpoints,
stats per variant, the winner sent to the rest with one message per
person, and pause / resume / cancel during the wait."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.testing import TimeSkipper

from definitions import workflow_ids
from definitions.campaigns import CampaignSendInput
from tests.campaigns.support import (
    HTML,
    add_people,
    assert_counted,
    finished,
    group_segment,
    inline_campaign,
    per_address,
)
from tests.delivery.conftest import SENDER, add_sendgrid, make_template
from tests.flows.support import wait_for

WAIT = 3600


def _ab(variants: list[dict], **extra) -> dict:
    return {"variants": variants, "test_percent": 30, "wait_seconds": WAIT, "metric": "open_rate"} | extra


def _subjects(n: int = 3) -> list[dict]:
    return [{"name": "ABCD"[i], "subject": f"Subject {'ABCD'[i]}"} for i in range(n)]


async def _timer_started(handle) -> bool:
    history = await handle.fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)


async def _skip_the_wait(client, handle) -> None:
    """Move the run's virtual clock past the A/B wait (Temporal's
    per-workflow time skipping; the dev server runs with it enabled). The
    call returns once the clock got there or the run ended, whichever first."""
    await asyncio.wait_for(TimeSkipper(client).fast_forward(handle, timedelta(seconds=WAIT)), timeout=120)


async def _stats(api, cid: str) -> dict:
    r = await api.get(f"/api/v1/campaigns/{cid}/stats")
    assert r.status_code == 200, r.text
    return r.json()


async def _recipients(api, cid: str) -> list[dict]:
    return (await api.get(f"/api/v1/campaigns/{cid}/recipients", params={"limit": 200})).json()["data"]


def _open_pixel(fake, address: str) -> str:
    html = next(m["html"] for m in fake.delivered() if m["to"] == address)
    return re.sub(r"^https?://[^/]+", "", re.search(r'src="([^"]+/o/[^"]+\.gif)"', html).group(1))


async def test_ab_test_validation(api, workspace):
    segment = await group_segment(api, "abv")
    template = await make_template(api, name="AB base")
    missing = "01a21780-0000-7000-8000-000000000000"
    inline = {"subject": "s", "html": HTML, "from_email": SENDER}
    bad = [
        (inline, _ab(_subjects(1)), "body.ab_test.variants"),
        (inline, _ab([*_subjects(4), {"name": "D", "subject": "E"}]), "body.ab_test.variants"),
        (inline, _ab([{"name": "A"}, {"name": "C"}]), "body.ab_test"),
        (inline, _ab([{"name": "A"}, {"name": "E"}]), "body.ab_test.variants.1.name"),
        (inline, _ab(_subjects(2), test_percent=0), "body.ab_test.test_percent"),
        (inline, _ab(_subjects(2), test_percent=101), "body.ab_test.test_percent"),
        (inline, _ab(_subjects(2), wait_seconds=5), "body.ab_test.wait_seconds"),
        (inline, _ab(_subjects(2), metric="revenue"), "body.ab_test.metric"),
        (inline, _ab([{"name": "A", "colour": "red"}, {"name": "B"}]), "body.ab_test.variants.0.colour"),
        (
            inline,
            _ab([{"name": "A"}, {"name": "B", "template_overrides": {"template_id": template["id"]}}]),
            "body.ab_test.variants.1.template_overrides",
        ),
        (
            {"template_id": template["id"]},
            _ab([{"name": "A", "html": HTML}, {"name": "B"}]),
            "body.ab_test.variants.0.html",
        ),
        (
            {"template_id": template["id"]},
            _ab([{"name": "A"}, {"name": "B", "template_overrides": {"template_id": missing}}]),
            "body.ab_test.variants.1.template_overrides.template_id",
        ),
        (
            {"template_id": template["id"]},
            _ab([{"name": "A"}, {"name": "B", "template_overrides": {"reply_to": "not an address"}}]),
            "body.ab_test.variants.1.template_overrides.reply_to",
        ),
    ]
    for index, (content, ab_test, loc) in enumerate(bad):
        body = {"name": f"bad {index}", "content": content, "audience": {"segment_ids": [segment]}}
        r = await api.post("/api/v1/campaigns", json=body | {"ab_test": ab_test})
        assert r.status_code == 422, (loc, r.text)
        assert loc in r.text, (loc, r.text)
    # A variant that does not compile is refused as the campaign's own content is.
    for content, variant in (
        (inline, {"name": "B", "subject": "{% if %}"}),
        (inline, {"name": "B", "html": "<p>{{ oops </p>"}),
        ({"template_id": template["id"]}, {"name": "B", "template_overrides": {"subject": "{% for %}"}}),
    ):
        body = {"name": "bad syntax", "content": content, "audience": {"segment_ids": [segment]}}
        r = await api.post("/api/v1/campaigns", json=body | {"ab_test": _ab([{"name": "A"}, variant])})
        assert r.status_code == 422, (variant, r.text)

    good = _ab(
        [
            {"name": "A"},
            {"name": "B", "template_overrides": {"subject": "Other {{ profile.first_name }}"}},
        ]
    )
    body = {
        "name": "good",
        "content": {"template_id": template["id"]},
        "audience": {"segment_ids": [segment]},
        "ab_test": good,
    }
    r = await api.post("/api/v1/campaigns", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["ab_test"]["variants"][1]["template_overrides"]["subject"].startswith("Other")
    assert created["ab_winner"] is None and created["respect_frequency_cap"] is True
    stats = await _stats(api, created["id"])
    assert stats["ab_test"] == {
        "metric": "open_rate",
        "test_percent": 30,
        "wait_seconds": WAIT,
        "status": "testing",
        "winner": None,
        "decided_at": None,
    }
    assert [(v["variant"], v["subject"], v["recipients"]) for v in stats["variants"]] == [
        ("A", "Hi {{ profile.first_name }}", 0),
        ("B", "Other {{ profile.first_name }}", 0),
    ]

    cid = created["id"]
    r = await api.patch(f"/api/v1/campaigns/{cid}", json={"ab_test": _ab([{"name": "A", "html": HTML}] * 2)})
    assert r.status_code == 422
    # Content changed to inline: the stored variants are checked against it.
    r = await api.patch(f"/api/v1/campaigns/{cid}", json={"content": inline})
    assert r.status_code == 422 and "body.ab_test.variants.1.template_overrides" in r.text
    # A/B tests are sent at one time, not at each person's local time.
    at = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    r = await api.post(f"/api/v1/campaigns/{cid}/schedule", json={"scheduled_at": at, "local_time": True})
    assert r.status_code == 422 and "body.local_time" in r.text
    r = await api.patch(f"/api/v1/campaigns/{cid}", json={"ab_test": None})
    assert r.status_code == 200 and r.json()["ab_test"] is None
    stats = await _stats(api, cid)
    assert stats["ab_test"] is None and stats["variants"] == []


async def test_winner_by_open_rate_goes_to_the_rest(
    api, tracking_app, worker, sendgrid, engine, workspace, temporal_client
):
    n = 40
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, n, "ab")
    campaign = await inline_campaign(api, [await group_segment(api, "ab")], ab_test=_ab(_subjects(3)))
    cid = campaign["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))
    await wait_for(lambda: _timer_started(handle), timeout=60)

    # 30 % of 40: 12 people, 4 per variant; nobody else is sent to while the timer runs.
    test_group = per_address(sendgrid)
    assert len(test_group) == 12 and set(test_group.values()) == {1}
    people = await _recipients(api, cid)
    variant_of = {p["email"]: p["variant"] for p in people if p["variant"] is not None}
    assert Counter(variant_of.values()) == {"A": 4, "B": 4, "C": 4}
    assert set(variant_of) == set(test_group)
    assert [p["variant"] for p in people[:12]] == ["A"] * 4 + ["B"] * 4 + ["C"] * 4
    for message in sendgrid.delivered():
        assert message["subject"] == f"Subject {variant_of[message['to']]}"
    waiting = await _stats(api, cid)
    assert waiting["ab_test"]["status"] == "waiting" and waiting["ab_test"]["winner"] is None
    timers = [
        e for e in (await handle.fetch_history()).events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert timers[-1].timer_started_event_attributes.start_to_fire_timeout.ToSeconds() == WAIT

    # Opens through the tracking pixel: A 1 of 4, B 2 of 4, C 2 of 4 (B and
    # C tie; the earlier variant wins). Opening twice counts once.
    by_variant: dict[str, list[str]] = {}
    for address, name in sorted(variant_of.items()):
        by_variant.setdefault(name, []).append(address)
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        for name, opened in (("A", 1), ("B", 2), ("C", 2)):
            for address in by_variant[name][:opened]:
                for _ in range(2):
                    assert (await client.get(_open_pixel(sendgrid, address))).status_code == 200

    # The timer is durable: skip the workflow's clock past it instead of waiting an hour.
    await _skip_the_wait(temporal_client, handle)
    done = await finished(api, cid, timeout=120)

    assert done["status"] == "sent" and done["sent"] == n and done["ab_winner"] == "B"
    received = per_address(sendgrid)
    assert received == {f"ab-{i}@example.com": 1 for i in range(n)}
    rest = [m for m in sendgrid.delivered() if m["to"] not in variant_of]
    assert len(rest) == n - 12 and {p["subject"] for p in rest} == {"Subject B"}
    stats = await _stats(api, cid)
    assert stats["ab_test"]["status"] == "decided" and stats["ab_test"]["winner"] == "B"
    assert stats["ab_test"]["decided_at"] is not None
    assert stats["variants"] == [
        {
            "variant": name,
            "subject": f"Subject {name}",
            "recipients": 4,
            "sent": 4,
            "unique_opens": opens,
            "unique_clicks": 0,
            "open_rate": opens / 4,
            "click_rate": 0.0,
        }
        for name, opens in (("A", 1), ("B", 2), ("C", 2))
    ]
    assert stats["sent"] == n and stats["unique_opens"] == 5
    people = await _recipients(api, cid)
    assert Counter(p["variant"] for p in people) == {"A": 4, "B": 4 + n - 12, "C": 4}
    history = await handle.fetch_history()
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in history.events)


async def test_click_rate_winner_and_pause_during_the_wait(
    api, tracking_app, worker, sendgrid, engine, workspace, temporal_client
):
    n = 10
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, n, "pw")
    ab_test = _ab(_subjects(2), test_percent=40, metric="click_rate")
    campaign = await inline_campaign(api, [await group_segment(api, "pw")], ab_test=ab_test)
    cid = campaign["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))
    await wait_for(lambda: _timer_started(handle), timeout=60)
    assert len(sendgrid.delivered()) == 4
    variant_of = {p["email"]: p["variant"] for p in await _recipients(api, cid) if p["variant"]}
    clicked = next(a for a, v in sorted(variant_of.items()) if v == "B")
    html = next(m["html"] for m in sendgrid.delivered() if m["to"] == clicked)
    link = re.search(r"href=['\"]([^'\"]+/c/[^'\"]+)['\"]", html).group(1)
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        assert (await client.get(re.sub(r"^https?://[^/]+", "", link))).status_code == 302

    paused = await api.post(f"/api/v1/campaigns/{cid}/pause")
    assert paused.status_code == 202 and paused.json()["status"] == "paused"
    # The clock runs on while paused: the winner is chosen, the rest waits for resume.
    await _skip_the_wait(temporal_client, handle)

    async def decided():
        stats = await _stats(api, cid)
        return stats if stats["ab_test"]["status"] == "decided" else None

    stats = await wait_for(decided, timeout=60)
    assert stats["ab_test"]["winner"] == "B"
    assert [v["click_rate"] for v in stats["variants"]] == [0.0, 0.5]
    assert len(sendgrid.delivered()) == 4
    assert (await api.get(f"/api/v1/campaigns/{cid}")).json()["status"] == "paused"
    resumed = await api.post(f"/api/v1/campaigns/{cid}/resume")
    assert resumed.status_code == 202 and resumed.json()["status"] == "sending"
    done = await finished(api, cid, timeout=60)
    assert done["status"] == "sent" and done["sent"] == n
    assert per_address(sendgrid) == {f"pw-{i}@example.com": 1 for i in range(n)}
    rest = [m for m in sendgrid.delivered() if m["to"] not in variant_of]
    assert {p["subject"] for p in rest} == {"Subject B"}


async def test_cancel_during_the_wait_sends_nothing_more(
    api, worker, sendgrid, engine, workspace, temporal_client
):
    n = 10
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, n, "cw")
    campaign = await inline_campaign(
        api, [await group_segment(api, "cw")], ab_test=_ab(_subjects(2), test_percent=20)
    )
    cid = campaign["id"]
    assert (await api.post(f"/api/v1/campaigns/{cid}/send")).status_code == 202
    handle = temporal_client.get_workflow_handle(workflow_ids.campaign(cid))
    await wait_for(lambda: _timer_started(handle), timeout=60)
    assert (await api.post(f"/api/v1/campaigns/{cid}/cancel")).status_code == 202
    done = await finished(api, cid, timeout=60)
    assert done["status"] == "cancelled" and done["sent"] == 2 and done["cancelled"] == n - 2
    assert len(sendgrid.delivered()) == 2 and done["ab_winner"] is None
    history = await handle.fetch_history()
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED for e in history.events)
    stats = await _stats(api, cid)
    assert stats["ab_test"]["status"] == "waiting" and stats["ab_test"]["winner"] is None
    assert stats["cancelled"] == n - 2
    assert (await assert_counted(engine, cid))["cancelled"] == n - 2


async def test_a_test_send_of_one_variant(api, worker, sendgrid, workspace):
    await add_sendgrid(api, sendgrid)
    campaign = await inline_campaign(api, [await group_segment(api, "tv")], ab_test=_ab(_subjects(2)))
    url = f"/api/v1/campaigns/{campaign['id']}/test"
    r = await api.post(url, json={"emails": ["qa@example.com"], "variant": "B"})
    assert r.status_code == 202, r.text
    await wait_for(lambda: _received_at_least(sendgrid, 1), timeout=30)
    assert [m["subject"] for m in sendgrid.delivered()] == ["Subject B"]
    assert (await api.post(url, json={"emails": ["qa@example.com"], "variant": "C"})).status_code == 422
    assert (await api.post(url, json={"emails": ["qa@example.com"], "variant": "Z"})).status_code == 422
    stats = await _stats(api, campaign["id"])
    assert stats["sent"] == 0 and [v["sent"] for v in stats["variants"]] == [0, 0]


async def _received_at_least(fake, n: int) -> bool:
    return len(fake.delivered()) >= n


async def test_the_test_state_survives_continue_as_new(
    api, worker, sendgrid, engine, workspace, temporal_client, settings
):
    # Batches of two and one batch per run: the run continues as new during
    # the test and during the rest; the cursor, the test's end and the
    # winner travel in its progress.
    n = 10
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, n, "can")
    ab_test = _ab(_subjects(2), test_percent=40)
    campaign = await inline_campaign(api, [await group_segment(api, "can")], ab_test=ab_test)
    cid = campaign["id"]
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE campaigns SET status = 'scheduled', scheduled_at = now() WHERE id = :c"), {"c": cid}
        )
    params = CampaignSendInput(
        workspace_id=workspace.workspace_id, campaign_id=cid, batch_size=2, window=1, batches_per_run=1
    )
    handle = await temporal_client.start_workflow(
        "CampaignSendWorkflow", params, id=workflow_ids.campaign(cid), task_queue=settings.temporal_task_queue
    )
    await wait_for(lambda: _timer_started(temporal_client.get_workflow_handle(handle.id)), timeout=60)
    assert len(sendgrid.delivered()) == 4
    await _skip_the_wait(temporal_client, temporal_client.get_workflow_handle(handle.id))
    done = await finished(api, cid, timeout=120)
    assert done["status"] == "sent" and done["sent"] == n and done["ab_winner"] == "A"
    assert per_address(sendgrid) == {f"can-{i}@example.com": 1 for i in range(n)}
    variant_of = {p["email"]: p["variant"] for p in await _recipients(api, cid)}
    for message in sendgrid.delivered():
        assert message["subject"] == f"Subject {variant_of[message['to']]}"
    # Runs: the snapshot and batch 1-2; batch 3-4, the wait, the decision and
    # 5-6; then 7-8; then 9-10 (visibility may lag a little behind).

    async def four_runs():
        query = f'WorkflowId = "{handle.id}"'
        runs = [w async for w in temporal_client.list_workflows(query)]
        return runs if len(runs) == 4 else None

    assert await wait_for(four_runs, timeout=30)
