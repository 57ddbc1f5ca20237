"""The dispatcher hands every announced event to its consumer workflow
once in effect, whatever mix of calls, duplicates, merges, refreshes and
engagement produced them, and whatever dispatch attempts died midway."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text
from temporalio.worker import Worker

from db.engine import driver_connection
from definitions.events import SystemEvent
from events import outbox
from events import writer as event_writer
from events.dispatcher import Delivery, OutboxDispatcher
from events.writer import ProfileChange
from segments import service as segment_service
from tests.events.probe import (
    PROBE,
    ProbeEvents,
    ProbeStart,
    ProbeState,
    ProbeWorkflow,
    probe_deliveries,
    probe_workflow_id,
)
from tests.support.outbox import listen

HEARD = ["Order Completed", "Cart Viewed"]
UNHEARD = ["Viewed Pricing"]

call = st.one_of(
    st.tuples(st.just("track"), st.sampled_from(HEARD + UNHEARD), st.sampled_from(["u1", "u2", "a1"]),
              st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3"]))),
    st.tuples(st.just("batch"), st.sampled_from(HEARD), st.just(""), st.none()),
    st.tuples(st.just("identify"), st.sampled_from(["plan", "age"]), st.sampled_from(["u1", "u2"]),
              st.none()),
    st.tuples(st.just("merge"), st.just(""), st.sampled_from(["u1", "u2"]), st.none()),
    st.tuples(st.just("refresh"), st.just(""), st.just(""), st.none()),
    st.tuples(st.just("crash"), st.just(""), st.just(""), st.none()),
    st.tuples(st.just("dispatch"), st.just(""), st.just(""), st.none()),
)  # fmt: skip


async def _expire_leases(engine, ws) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox SET claimed_until = now() - interval '1 second' WHERE workspace_id = :w"),
            {"w": ws},
        )


async def _run_mix(calls, *, tracking, api, engine, dispatcher, temporal_client, ws) -> None:
    segment = (
        await api.post(
            "/api/v1/segments",
            json={
                "name": f"plan-{uuid.uuid4().hex[:6]}",
                "definition": {"type": "trait", "path": "plan", "op": "exists"},
            },
        )
    ).json()
    for kind, name, who, message_id in calls:
        if kind == "track":
            body = {"event": name, ("anonymousId" if who.startswith("a") else "userId"): who}
            if message_id:
                body["messageId"] = f"{message_id}-{who}"
            assert (await tracking.post("/track", json=body)).status_code == 200
        elif kind == "batch":  # several events in one statement: one outbox row carries them
            batch = [
                {"userId": "u1", "event": name},
                {"userId": "u2", "event": name},
                {"anonymousId": "a1", "event": UNHEARD[0]},
                {"anonymousId": "a1", "event": HEARD[0]},
            ]
            assert (await tracking.post("/track/batch", json={"batch": batch})).status_code == 200
        elif kind == "identify":
            await tracking.post("/identify", json={"userId": who, "traits": {name: uuid.uuid4().hex[:4]}})
        elif kind == "merge":
            await tracking.post("/identify", json={"userId": who, "anonymousId": "a1"})
        elif kind == "refresh":
            async with engine.begin() as conn:
                await segment_service.refresh(conn, ws, uuid.UUID(segment["id"]))
        elif kind == "crash":
            # A dispatcher claimed rows and died before handing them over.
            await outbox.claim(engine, [PROBE], 3, 300, expired=False)
        else:
            await dispatcher.dispatch_once()
    # The sweep takes what crashed dispatchers left; everything drains.
    await _expire_leases(engine, ws)
    for _ in range(50):
        if not await dispatcher.dispatch_once(expired=True) and not await dispatcher.dispatch_once():
            break


async def _expected(engine, ws) -> tuple[set[uuid.UUID], int]:
    async with engine.connect() as conn:
        heard = [*HEARD, SystemEvent.SEGMENT_ENTERED.value, SystemEvent.SEGMENT_EXITED.value]
        rows = await conn.execute(
            text("SELECT id FROM events WHERE workspace_id = :w AND name = ANY(:n)"), {"w": ws, "n": heard}
        )
        left = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE workspace_id = :w AND consumer = :c"),
            {"w": ws, "c": PROBE},
        )
        return {r[0] for r in rows}, left


async def test_every_announced_event_is_applied_once(
    tracking_app, api_app, engine, temporal_client, settings, sessionmaker
):
    import httpx

    from tests.conftest import new_workspace

    queue = f"{settings.temporal_task_queue}-probe"
    dispatcher = OutboxDispatcher(engine, temporal_client, queue, {PROBE: probe_deliveries}, batch_size=4)

    loop = asyncio.get_running_loop()

    # Hypothesis drives a plain function: run it in a thread and each
    # example on this loop, where the engine and clients live.
    @hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(calls=st.lists(call, min_size=1, max_size=14))
    def check(calls) -> None:
        asyncio.run_coroutine_threadsafe(_check(calls), loop).result()

    async def _check(calls) -> None:
        keys = await new_workspace(sessionmaker)
        ws = keys.workspace_id
        await listen(
            engine, ws, PROBE, events=[*HEARD, SystemEvent.SEGMENT_ENTERED, SystemEvent.SEGMENT_EXITED]
        )
        async with (
            httpx.AsyncClient(
                base_url=tracking_app.state.base_url, headers={"Authorization": f"Bearer {keys.public_key}"}
            ) as tracking,
            httpx.AsyncClient(
                base_url=api_app.state.base_url, headers={"Authorization": f"Bearer {keys.secret_key}"}
            ) as api,
        ):
            await _run_mix(
                calls, tracking=tracking, api=api, engine=engine, dispatcher=dispatcher,
                temporal_client=temporal_client, ws=ws,
            )  # fmt: skip
        expected, left = await _expected(engine, ws)
        assert left == 0, "rows left in the outbox"
        if not expected:
            return
        handle = temporal_client.get_workflow_handle(probe_workflow_id(ws))
        state: ProbeState = await handle.query("state", result_type=ProbeState)
        assert set(state.applied) == expected
        assert len(state.applied) == len(expected)
        await handle.cancel()

    async with Worker(temporal_client, task_queue=queue, workflows=[ProbeWorkflow]):
        await asyncio.to_thread(check)


async def test_a_claim_is_bounded_in_events_and_expands_rows(engine, workspace):
    """Rows carry several events; a claim takes rows in order until the
    limit in events is reached (at least one row) and hands out one
    OutboxRow per event, sharing its row's id."""
    ws = workspace.workspace_id
    consumer = f"probe-{uuid.uuid4().hex[:8]}"  # rows of other tests' workspaces stay out
    await listen(engine, ws, consumer, traits=["plan"])
    async with engine.begin() as conn:
        raw = await driver_connection(conn)
        pids = [uuid.uuid4() for _ in range(3)]
        for _ in range(3):  # three statements, three rows of three
            await event_writer.write(raw, [], [ProfileChange(ws, p, trait_keys=["plan"]) for p in pids])
    first = await outbox.claim(engine, [consumer], 2, 60, expired=False)
    assert sorted(r.profile_id for r in first) == sorted(pids) and len({r.id for r in first}) == 1
    assert {r.event_name for r in first} == {None}
    rest = await outbox.claim(engine, [consumer], 4, 60, expired=False)
    assert len(rest) == 6 and len({r.id for r in rest}) == 2
    assert await outbox.claim(engine, [consumer], 4, 60, expired=False) == []
    await _expire_leases(engine, ws)
    again = await outbox.claim(engine, [consumer], 100, 60, expired=True)
    assert len(again) == 9 and {r.attempts for r in again} == {2}


async def test_a_row_with_one_refused_delivery_waits_whole_for_the_sweep(engine, workspace, temporal_client):
    """One event of a row refused: the row is kept (delayed), not deleted;
    the sweep hands all its events again (consumers drop those seen)."""
    ws = workspace.workspace_id
    consumer = f"probe-{uuid.uuid4().hex[:8]}"  # rows of other tests' workspaces stay out
    await listen(engine, ws, consumer, traits=["plan"])
    async with engine.begin() as conn:
        raw = await driver_connection(conn)
        await event_writer.write(
            raw, [], [ProfileChange(ws, uuid.uuid4(), trait_keys=["plan"]) for _ in range(2)]
        )

    async def half_refused(rows):
        # The first event's start is refused (Temporal rejects an id that
        # long); the second event's signal finds no run: done.
        first, second = rows
        assert first.id == second.id
        events = ProbeEvents(event_ids=[first.event_id], profile_ids=[first.profile_id])
        return [
            Delivery("ProbeWorkflow", "x" * 5000, ProbeStart(workspace_id=ws), "events", events, [first.id]),
            Delivery("ProbeWorkflow", f"gone-{uuid.uuid4()}", None, "events", events, [second.id]),
        ]

    dispatcher = OutboxDispatcher(engine, temporal_client, "nowhere", {consumer: half_refused})
    assert await dispatcher.dispatch_once() == 2
    assert dispatcher.dispatched == 0
    async with engine.connect() as conn:
        kept = (
            await conn.execute(
                text("SELECT size, claimed_until > now() FROM outbox WHERE workspace_id = :w"), {"w": ws}
            )
        ).all()
    assert kept == [(2, True)]
