"""Flow features end to end on real services: welcome series with a branch
on an open, quiet hours, frequency cap, re-entry, exit events and exits,
webhooks (signed; retries then the error edge), segment triggers, merges,
API and bulk enrollment."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from activities.flows import SIGNATURE_HEADER, webhook_signature
from db.engine import session_scope
from flows import runtime
from segments import service as segment_service
from tests.delivery.conftest import add_sendgrid, make_template
from tests.flows.support import active_flow, enrollments, wait_for
from tests.support.servers import serve


async def _person(tracking, user: str, **traits) -> None:
    body = {"userId": user, "traits": {"email": f"{user}@example.com", **traits}}
    assert (await tracking.post("/identify", json=body)).status_code == 200


async def _track(tracking, user: str, event: str, **properties) -> None:
    body = {"userId": user, "event": event, "properties": properties}
    assert (await tracking.post("/track", json=body)).status_code == 200


async def _finished(engine, flow_id, n: int = 1, timeout: float = 30):
    async def done():
        rows = await enrollments(engine, flow_id)
        return rows if len(rows) >= n and all(r["status"] != "running" for r in rows) else None

    return await wait_for(done, timeout=timeout)


def _to(payload: dict) -> str:
    return payload["personalizations"][0]["to"][0]["email"]


async def test_welcome_series_branches_on_opening_the_first_email(
    api, tracking, tracking_app, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    first = await make_template(api, name="First", subject="Welcome")
    opened = await make_template(api, name="Opened", subject="Glad you read it")
    missed = await make_template(api, name="Missed", subject="Did you miss us")
    definition = {
        "trigger": {"type": "event", "name": "Signed Up"},
        "start": "welcome",
        "nodes": [
            {"id": "welcome", "type": "send_email", "template_id": first["id"], "next": "pause"},
            {"id": "pause", "type": "wait", "seconds": 3, "next": "check"},
            {"id": "check", "type": "branch", "otherwise": "nudge",
             "branches": [{"condition": {"type": "email", "action": "opened"}, "next": "thanks"}]},
            {"id": "thanks", "type": "send_email", "template_id": opened["id"]},
            {"id": "nudge", "type": "send_email", "template_id": missed["id"]},
        ],
    }  # fmt: skip
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
    for user in ("reader", "skipper"):
        await _person(tracking, user)
        await _track(tracking, user, "Signed Up")

    async def both_welcomed():
        return len(sendgrid.received) >= 2

    await wait_for(both_welcomed)
    reader_mail = next(p for p in sendgrid.received if _to(p) == "reader@example.com")
    html = next(c["value"] for c in reader_mail["content"] if c["type"] == "text/html")
    pixel = re.search(r'src="https?://[^/]+(/o/[^"]+\.gif)"', html).group(1)
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        assert (await client.get(pixel)).status_code == 200
    await _finished(engine, flow_id, 2)
    subjects = {(_to(p), p["subject"]) for p in sendgrid.received}
    assert subjects == {
        ("reader@example.com", "Welcome"),
        ("skipper@example.com", "Welcome"),
        ("reader@example.com", "Glad you read it"),
        ("skipper@example.com", "Did you miss us"),
    }
    async with engine.connect() as conn:
        edges = dict(
            (
                await conn.execute(
                    text(
                        "SELECT p.external_id, s.edge FROM flow_steps s "
                        "JOIN flow_enrollments e ON e.id = s.enrollment_id "
                        "JOIN profiles p ON p.id = e.profile_id "
                        "WHERE s.flow_id = :f AND s.node_id = 'check'"
                    ),
                    {"f": flow_id},
                )
            ).all()
        )
    assert edges == {"reader": "branch:0", "skipper": "otherwise"}


async def test_quiet_hours_hold_the_send_and_an_exit_stops_the_wait(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    now = datetime.now(UTC)
    # A quiet window around the present moment in the person's timezone.
    start = (now - timedelta(hours=1)).astimezone(ZoneInfo("Asia/Tokyo"))
    end = (now + timedelta(hours=1)).astimezone(ZoneInfo("Asia/Tokyo"))
    definition = {
        "trigger": {"type": "event", "name": "Signed Up"},
        "start": "mail",
        "nodes": [{"id": "mail", "type": "send_email", "template_id": template["id"]}],
        "settings": {"quiet_hours": {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}},
    }
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
    await _person(tracking, "night", timezone="Asia/Tokyo")
    await _track(tracking, "night", "Signed Up")

    async def at_mail():
        rows = await enrollments(engine, flow_id)
        return rows if rows and rows[0]["current_node"] == "mail" else None

    [row] = await wait_for(at_mail)
    await asyncio.sleep(2)
    assert sendgrid.received == []  # held by quiet hours
    async with session_scope(sessionmaker) as session:
        await runtime.request_exits(session, workspace.workspace_id, [row["id"]])
    [row] = await _finished(engine, flow_id, timeout=20)
    assert row["status"] == "exited"
    assert sendgrid.received == []


async def test_frequency_cap_skips_across_flows(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)

    def mailer(trigger: str) -> dict:
        return {
            "trigger": {"type": "event", "name": trigger},
            "start": "mail",
            "nodes": [{"id": "mail", "type": "send_email", "template_id": template["id"]}],
            "settings": {"frequency_cap": {"max_emails": 1, "period_seconds": 86400}},
        }

    first = await active_flow(sessionmaker, workspace.workspace_id, mailer("Signed Up"))
    second = await active_flow(sessionmaker, workspace.workspace_id, mailer("Browsed"))
    await _person(tracking, "capped")
    await _track(tracking, "capped", "Signed Up")
    await _finished(engine, first)
    await _track(tracking, "capped", "Browsed")
    await _finished(engine, second)
    assert len(sendgrid.received) == 1
    async with engine.connect() as conn:
        outcome = await conn.scalar(text("SELECT outcome FROM flow_steps WHERE flow_id = :f"), {"f": second})
    assert outcome == "capped"


async def test_reentry_once_always_and_after(tracking, worker, engine, sessionmaker, workspace):
    def flow(name: str, **settings) -> dict:
        return {
            "trigger": {"type": "event", "name": name},
            "start": "end",
            "nodes": [{"id": "end", "type": "exit"}],
            "settings": settings,
        }

    once = await active_flow(sessionmaker, workspace.workspace_id, flow("Visit A", reentry="once"))
    always = await active_flow(sessionmaker, workspace.workspace_id, flow("Visit B", reentry="always"))
    after = await active_flow(
        sessionmaker, workspace.workspace_id, flow("Visit C", reentry="after", reentry_after_seconds=3600)
    )
    await _person(tracking, "regular")
    for _ in range(2):
        for name in ("Visit A", "Visit B", "Visit C"):
            await _track(tracking, "regular", name)
        await _finished(engine, always, 1)
        await asyncio.sleep(1.0)  # the first runs end before the second triggers
    await _finished(engine, always, 2)
    assert len(await enrollments(engine, once)) == 1
    assert len(await enrollments(engine, after)) == 1
    assert [r["status"] for r in await enrollments(engine, always)] == ["completed", "completed"]


async def test_exit_event_ends_a_waiting_enrollment(tracking, worker, engine, sessionmaker, workspace):
    definition = {
        "trigger": {"type": "event", "name": "Trial Started"},
        "start": "long",
        "nodes": [{"id": "long", "type": "wait", "seconds": 3600}],
        "settings": {"exit_events": [{"name": "Account Closed"}]},
    }
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
    await _person(tracking, "leaver")
    await _track(tracking, "leaver", "Trial Started")
    await wait_for(lambda: enrollments(engine, flow_id))
    await _track(tracking, "leaver", "Account Closed")
    [row] = await _finished(engine, flow_id, timeout=20)
    assert row["status"] == "exited"


async def test_webhook_is_signed_and_retries_then_takes_the_error_edge(
    tracking, worker, engine, sessionmaker, settings, workspace
):
    hits: list[tuple[int, bytes, dict]] = []
    app = FastAPI()

    @app.post("/ok")
    async def ok(request: Request) -> JSONResponse:
        hits.append((200, await request.body(), dict(request.headers)))
        return JSONResponse({"ok": True})

    @app.post("/broken")
    async def broken(request: Request) -> JSONResponse:
        hits.append((500, await request.body(), dict(request.headers)))
        return JSONResponse({"error": "down"}, status_code=500)

    async with serve(app) as url:
        definition = {
            "trigger": {"type": "event", "name": "Upgraded"},
            "start": "notify",
            "nodes": [
                {"id": "notify", "type": "webhook", "url": f"{url}/ok", "next": "fragile"},
                {"id": "fragile", "type": "webhook", "url": f"{url}/broken", "max_attempts": 2,
                 "next": "done", "on_error": "flag"},
                {"id": "flag", "type": "update_profile", "traits": {"crm_sync": "failed"}},
                {"id": "done", "type": "exit"},
            ],
        }  # fmt: skip
        flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
        await _person(tracking, "upgrader")
        await _track(tracking, "upgrader", "Upgraded", plan="pro")
        [row] = await _finished(engine, flow_id, timeout=40)
    assert row["status"] == "completed"
    assert [code for code, _, _ in hits] == [200, 500, 500]
    _, body, headers = hits[0]
    stamp = int(re.search(r"t=(\d+)", headers[SIGNATURE_HEADER.lower()]).group(1))
    assert headers[SIGNATURE_HEADER.lower()] == webhook_signature(
        settings.secret_key, workspace.workspace_id, stamp, body
    )
    document = orjson.loads(body)
    assert document["trigger"]["properties"] == {"plan": "pro"}
    assert document["profile"]["external_id"] == "upgrader"
    async with engine.connect() as conn:
        traits = await conn.scalar(
            text("SELECT traits FROM profiles WHERE id = :p"), {"p": row["profile_id"]}
        )
    assert traits["crm_sync"] == "failed"


async def test_segment_trigger_and_bulk_enrollment(
    api, tracking, worker, engine, sessionmaker, workspace, temporal_client, settings
):
    segment = (
        await api.post(
            "/api/v1/segments",
            json={"name": "VIP", "definition": {"type": "trait", "path": "vip", "op": "eq", "value": True}},
        )
    ).json()
    flow_def = {
        "trigger": {"type": "segment", "segment_id": segment["id"]},
        "start": "end",
        "nodes": [{"id": "end", "type": "exit"}],
    }
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, flow_def)
    await _person(tracking, "vip1", vip=True)
    await _person(tracking, "vip2", vip=True)
    await _person(tracking, "plain", vip=False)
    async with engine.begin() as conn:
        await segment_service.refresh(conn, workspace.workspace_id, uuid.UUID(segment["id"]))
    rows = await _finished(engine, flow_id, 2)
    assert len(rows) == 2

    api_def = {"trigger": {"type": "api"}, "start": "end", "nodes": [{"id": "end", "type": "exit"}]}
    bulk_flow = await active_flow(sessionmaker, workspace.workspace_id, api_def)
    async with session_scope(sessionmaker) as session:
        counts = await runtime.enroll_segment(
            temporal_client, settings, session, workspace.workspace_id, bulk_flow, uuid.UUID(segment["id"])
        )
    assert counts.enrolled == 2 and counts.refused == 0
    await _finished(engine, bulk_flow, 2)
    async with session_scope(sessionmaker) as session:
        again = await runtime.enroll_segment(
            temporal_client, settings, session, workspace.workspace_id, bulk_flow, uuid.UUID(segment["id"])
        )
    assert again.enrolled == 0 and again.refused == 2  # re-entry once (the default)


async def test_enrollments_follow_a_merged_profile(tracking, worker, engine, sessionmaker, workspace):
    definition = {
        "trigger": {"type": "event", "name": "Viewed Pricing"},
        "start": "wait",
        "nodes": [{"id": "wait", "type": "wait", "seconds": 3600}],
        "settings": {"goal": {"name": "Subscribed"}},
    }
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
    await tracking.post("/track", json={"anonymousId": "visitor-1", "event": "Viewed Pricing"})
    [anonymous] = await wait_for(lambda: enrollments(engine, flow_id))
    # The visitor signs in: the anonymous profile merges into the known one.
    await _person(tracking, "known")
    await tracking.post("/identify", json={"userId": "known", "anonymousId": "visitor-1"})
    async with engine.connect() as conn:
        known = await conn.scalar(
            text("SELECT id FROM profiles WHERE workspace_id = :w AND external_id = 'known'"),
            {"w": workspace.workspace_id},
        )
    [moved] = await wait_for(lambda: enrollments(engine, flow_id))
    assert moved["profile_id"] == known != anonymous["profile_id"]
    # A later event of the merged person reaches the same run.
    await _track(tracking, "known", "Subscribed")
    [row] = await _finished(engine, flow_id, timeout=20)
    assert row["status"] == "converted" and row["id"] == anonymous["id"]


async def test_date_trait_triggers_once_per_date(
    tracking, worker, engine, sessionmaker, workspace, temporal_client, settings
):
    from definitions.flow_runs import DateTriggersInput, DateTriggersResult

    today = datetime.now(UTC).date()
    trial = {
        "trigger": {"type": "date", "trait": "trial_ends_at", "offset_days": -3, "time_of_day": "00:00"},
        "start": "end",
        "nodes": [{"id": "end", "type": "exit"}],
    }
    birthday = {
        "trigger": {"type": "date", "trait": "profile.birthday", "yearly": True, "time_of_day": "00:00"},
        "start": "end",
        "nodes": [{"id": "end", "type": "exit"}],
        "settings": {"reentry": "always"},
    }
    trial_flow = await active_flow(sessionmaker, workspace.workspace_id, trial)
    birthday_flow = await active_flow(sessionmaker, workspace.workspace_id, birthday)
    await _person(tracking, "due", trial_ends_at=(today + timedelta(days=3)).isoformat(), timezone="UTC")
    await _person(tracking, "later", trial_ends_at=(today + timedelta(days=9)).isoformat(), timezone="UTC")
    born = f"1992-{today:%m-%d}"  # a leap year: every month-day exists
    await _person(tracking, "cake", profile={"birthday": born}, timezone="UTC")
    for run in range(2):  # a second pass on the same day enrolls nobody again
        result = await temporal_client.execute_workflow(
            "FlowDateTriggersWorkflow",
            DateTriggersInput(),
            id=f"date-triggers-test-{uuid.uuid4()}",
            task_queue=settings.temporal_task_queue,
            result_type=DateTriggersResult,
        )
        if run == 0:
            assert result.announced == 2
            await _finished(engine, trial_flow, 1)
            await _finished(engine, birthday_flow, 1)
        else:
            assert result.announced == 0
    [trial_run] = await enrollments(engine, trial_flow)
    [party] = await enrollments(engine, birthday_flow)
    async with engine.connect() as conn:
        people = dict(
            (await conn.execute(text("SELECT id, external_id FROM profiles WHERE workspace_id = :w"),
                                {"w": workspace.workspace_id})).all()
        )  # fmt: skip
    assert people[trial_run["profile_id"]] == "due" and people[party["profile_id"]] == "cake"


async def test_pause_holds_sends_and_versions_are_pinned(
    api, tracking, worker, sendgrid, engine, sessionmaker, workspace
):
    await add_sendgrid(api, sendgrid)
    old = await make_template(api, name="Old", subject="Version one")
    new = await make_template(api, name="New", subject="Version two")

    def mailer(template_id: str) -> dict:
        return {
            "trigger": {"type": "event", "name": "Joined"},
            "start": "pause",
            "nodes": [
                {"id": "pause", "type": "wait", "seconds": 2, "next": "mail"},
                {"id": "mail", "type": "send_email", "template_id": template_id},
            ],
            "settings": {"reentry": "always"},
        }

    flow_id = await active_flow(sessionmaker, workspace.workspace_id, mailer(old["id"]))
    await _person(tracking, "early")
    await _track(tracking, "early", "Joined")
    await wait_for(lambda: enrollments(engine, flow_id))
    # An edit while it runs: version 2 for new enrollments; the running one keeps version 1.
    # Paused at once: the running enrollment is held before its send.
    async with session_scope(sessionmaker) as session:
        conn = await session.connection()
        await conn.execute(
            text(
                "INSERT INTO flow_versions (flow_id, version, workspace_id, definition) "
                "VALUES (:f, 2, :w, CAST(:d AS jsonb))"
            ),
            {"f": flow_id, "w": workspace.workspace_id, "d": orjson.dumps(mailer(new["id"])).decode()},
        )
        await conn.execute(
            text("UPDATE flows SET version = 2, status = 'paused' WHERE id = :f"), {"f": flow_id}
        )
        await runtime.flow_changed(session, workspace.workspace_id, flow_id)
    await asyncio.sleep(4)
    assert sendgrid.received == []  # held while paused
    [row] = await enrollments(engine, flow_id)
    assert row["status"] == "running" and row["current_node"] == "mail" and row["version"] == 1
    await _track(tracking, "early", "Joined")  # paused: no new enrollment
    await asyncio.sleep(1)
    assert len(await enrollments(engine, flow_id)) == 1
    async with session_scope(sessionmaker) as session:
        conn = await session.connection()
        await conn.execute(text("UPDATE flows SET status = 'active' WHERE id = :f"), {"f": flow_id})
        await runtime.flow_changed(session, workspace.workspace_id, flow_id)

    async def held_one_sent():
        return len(sendgrid.received) >= 1

    await wait_for(held_one_sent, timeout=30)  # activation signals the held run
    assert sendgrid.received[0]["subject"] == "Version one"
    await _finished(engine, flow_id, 1)
    await _person(tracking, "late")
    await _track(tracking, "late", "Joined")
    rows = await _finished(engine, flow_id, 2)
    assert sorted(r["version"] for r in rows) == [1, 2]
    assert sorted(p["subject"] for p in sendgrid.received) == ["Version one", "Version two"]


async def test_erasing_a_person_exits_their_enrollments(
    api, tracking, worker, engine, sessionmaker, workspace
):
    definition = {
        "trigger": {"type": "event", "name": "Started Trial"},
        "start": "long",
        "nodes": [{"id": "long", "type": "wait", "seconds": 3600}],
    }
    flow_id = await active_flow(sessionmaker, workspace.workspace_id, definition)
    await _person(tracking, "forget-me")
    await _track(tracking, "forget-me", "Started Trial")
    [row] = await wait_for(lambda: enrollments(engine, flow_id))
    assert (await api.delete(f"/api/v1/profiles/{row['profile_id']}")).status_code in (200, 204)
    [row] = await _finished(engine, flow_id, timeout=20)
    assert row["status"] == "exited"
