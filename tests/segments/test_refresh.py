"""Segment refresh on Temporal: the dispatcher schedule, per-workspace
intervals, no double starts, and re-checks triggered by tracking."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from temporalio.client import WorkflowExecutionStatus

from definitions import workflow_ids
from definitions.segment_runs import DueSegmentsInput, SegmentRefreshResult
from segments import repository as repo


async def _wait_for(predicate, timeout: float = 15.0, interval: float = 0.2):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def _profile_id(api, external_id: str) -> str:
    return (await api.get("/api/v1/profiles", params={"external_id": external_id})).json()["data"][0]["id"]


async def test_tracked_event_enters_segment_within_seconds(api, tracking, worker, engine, workspace):
    await tracking.post("/identify", json={"userId": "dan", "traits": {"plan": "free"}})
    seg = (
        await api.post(
            "/api/v1/segments",
            json={
                "name": "Bought",
                "definition": {"type": "event", "name": "Order Completed", "within": {"last": 7}},
            },
        )
    ).json()
    first = (await api.post(f"/api/v1/segments/{seg['id']}/recalculate", params={"wait": 30})).json()
    assert first["member_count"] == 0

    await asyncio.sleep(0.5)  # tracking re-reads segment dependencies (0.3 s in tests)
    await tracking.post("/track", json={"userId": "dan", "event": "Order Completed"})

    async def dan_is_member():
        return (await api.get(f"/api/v1/segments/{seg['id']}/members")).json()["data"]

    members = await _wait_for(dan_is_member)
    assert [m["external_id"] for m in members] == ["dan"]
    async with engine.connect() as conn:
        entered = (
            await conn.execute(
                text("SELECT count(*) FROM events WHERE workspace_id = :ws AND name = 'Segment Entered'"),
                {"ws": workspace.workspace_id},
            )
        ).scalar()
    assert entered == 1


async def test_trait_change_exits_segment_within_seconds(api, tracking, worker):
    await tracking.post("/identify", json={"userId": "eve", "traits": {"plan": "pro"}})
    seg = (
        await api.post(
            "/api/v1/segments",
            json={"name": "Pro", "definition": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}},
        )
    ).json()
    assert (await api.post(f"/api/v1/segments/{seg['id']}/recalculate", params={"wait": 30})).json()[
        "member_count"
    ] == 1

    await asyncio.sleep(0.5)
    await tracking.post("/identify", json={"userId": "eve", "traits": {"plan": "free"}})

    async def eve_left():
        return (await api.get(f"/api/v1/segments/{seg['id']}/members")).json()["data"] == []

    await _wait_for(eve_left)


async def test_dispatcher_refreshes_due_segments_and_skips_running_ones(
    api, tracking, worker, temporal_client, settings, engine, workspace
):
    await tracking.post("/identify", json={"userId": "fay", "traits": {"plan": "pro"}})
    due = (
        await api.post(
            "/api/v1/segments",
            json={"name": "Due", "definition": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}},
        )
    ).json()
    busy = (
        await api.post(
            "/api/v1/segments",
            json={"name": "Busy", "definition": {"type": "trait", "path": "plan", "op": "exists"}},
        )
    ).json()

    # Hold Busy's lock so its refresh stays running.
    async with engine.connect() as holder:
        await holder.execute(text("BEGIN"))
        await holder.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('segment:' || :sid))"), {"sid": busy["id"]}
        )
        api_run = await api.post(f"/api/v1/segments/{busy['id']}/recalculate", params={"wait": 0})
        assert api_run.json()["status"] == "running"

        started = await temporal_client.execute_workflow(
            "SegmentRefreshDispatchWorkflow",
            DueSegmentsInput(limit=1000),
            id=f"test-dispatch-{uuid.uuid4()}",
            task_queue=settings.temporal_task_queue,
            result_type=int,
        )
        assert started >= 1
        # The run the API started is still the one running (not replaced or doubled).
        running = await temporal_client.get_workflow_handle(
            workflow_ids.segment_refresh(busy["id"])
        ).describe()
        assert (
            running.run_id == api_run.json()["run_id"] and running.status == WorkflowExecutionStatus.RUNNING
        )

        async def runs_listed():  # visibility is eventually consistent
            return [
                w
                async for w in temporal_client.list_workflows(
                    f'WorkflowId = "{workflow_ids.segment_refresh(busy["id"])}"'
                )
            ]

        assert len(await _wait_for(runs_listed)) == 1, "a running refresh was started twice"
        await holder.execute(text("ROLLBACK"))

    async def both_refreshed():
        due_now = (await api.get(f"/api/v1/segments/{due['id']}")).json()
        busy_now = (await api.get(f"/api/v1/segments/{busy['id']}")).json()
        return due_now["member_count"] == 1 and busy_now["member_count"] == 1

    await _wait_for(both_refreshed, timeout=30)
    # The one run of Busy finishes once its lock is released.
    handle = temporal_client.get_workflow_handle(
        workflow_ids.segment_refresh(busy["id"]),
        run_id=api_run.json()["run_id"],
        result_type=SegmentRefreshResult,
    )
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.found and result.member_count == 1


async def test_dispatcher_drains_more_due_segments_than_one_page(
    api, tracking, worker, temporal_client, settings, engine, workspace
):
    await tracking.post("/identify", json={"userId": "page", "traits": {"plan": "pro"}})
    created = [
        (
            await api.post(
                "/api/v1/segments",
                json={"name": f"Paged {n}", "definition": {"type": "trait", "path": "plan", "op": "exists"}},
            )
        ).json()["id"]
        for n in range(7)
    ]
    # Half of them computed long ago, so the pages span both never-computed
    # and stale segments (the cursor's two cases).
    async with engine.begin() as conn:
        for sid in created[::2]:
            await repo.record_refresh(conn, uuid.UUID(sid), 0, datetime.now(UTC) - timedelta(days=1))

    # Paging by hand: every due segment exactly once across pages of 2.
    async with engine.connect() as conn:
        now, after, seen = datetime.now(UTC), None, []
        while True:
            page = await repo.due_segments(conn, now, 2, after)
            seen += [row[0] for row in page]
            if len(page) < 2:
                break
            after = (page[-1][2], page[-1][0])
    assert len(seen) == len(set(seen)) and {uuid.UUID(s) for s in created} <= set(seen)

    # 7 due segments (at least): 4 pages or more, 2 pages per run.
    handle = await temporal_client.start_workflow(
        "SegmentRefreshDispatchWorkflow",
        DueSegmentsInput(limit=2, concurrency=2, pages_per_run=2),
        id=f"test-dispatch-{uuid.uuid4()}",
        task_queue=settings.temporal_task_queue,
        result_type=int,
        execution_timeout=timedelta(minutes=2),
    )
    started = await handle.result()  # follows the chain of runs
    assert started >= len(created)
    first_run = await temporal_client.get_workflow_handle(handle.id, run_id=handle.result_run_id).describe()
    assert first_run.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    for sid in created:  # the dispatcher waits for its refreshes: all done now
        segment = (await api.get(f"/api/v1/segments/{sid}")).json()
        assert segment["member_count"] == 1, segment
    async with engine.connect() as conn:
        assert not {uuid.UUID(s) for s in created} & {
            row[0] for row in await repo.due_segments(conn, now, 1000)
        }


async def test_due_segments_follow_the_workspace_interval(api, engine, workspace):
    seg = (
        await api.post(
            "/api/v1/segments",
            json={"name": "Interval", "definition": {"type": "trait", "path": "plan", "op": "exists"}},
        )
    ).json()
    sid = uuid.UUID(seg["id"])
    now = datetime.now(UTC)

    async def is_due() -> bool:
        async with engine.connect() as conn:
            return sid in {row[0] for row in await repo.due_segments(conn, now, 100_000)}

    assert await is_due()  # never computed
    async with engine.begin() as conn:
        await repo.record_refresh(conn, sid, 0, now - timedelta(minutes=3))
    assert not await is_due()  # default 5 minutes
    await api.put("/api/v1/workspace/settings", json={"segment_refresh_minutes": 2})
    assert await is_due()


async def test_recheck_outbox_is_drained(api, tracking, worker, engine, workspace):
    await tracking.post("/identify", json={"userId": "gus", "traits": {"plan": "pro"}})
    await api.post(
        "/api/v1/segments",
        json={"name": "Pro", "definition": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}},
    )
    await asyncio.sleep(0.5)
    for n in range(30):
        await tracking.post(
            "/identify", json={"userId": f"gus{n}", "traits": {"plan": "pro" if n % 2 else "free"}}
        )

    async def drained():
        async with engine.connect() as conn:
            left = await conn.scalar(
                text("SELECT count(*) FROM outbox WHERE workspace_id = :w"), {"w": workspace.workspace_id}
            )
        return left == 0

    await _wait_for(drained)

    async def members():
        page = (await api.get("/api/v1/segments")).json()["data"][0]
        listed = (await api.get(f"/api/v1/segments/{page['id']}/members", params={"limit": 100})).json()[
            "data"
        ]
        return len(listed) == 15 and listed

    await _wait_for(members)
