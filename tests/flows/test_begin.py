"""The ways an enrollment is recorded: by the outbox consumer before it
starts the run (`FlowConsumer._enter` / `enter_many`: most runs), by the
run's first activity `enter_flow_enrollment` (the API's enrollments, flows
with an exit condition: the enrollment and its first step in one
transaction), and `begin_flow_enrollment` (runs begun before that change,
replaying their history). All go through the same re-entry rules in
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import text

from activities.flows import FlowActivities
from definitions.flow_runs import BeginInput, EnterInput, FlowEvent, FlowRunInput, StepInput, enrollment_id
from definitions.flows import FlowGraph
from definitions.search_attributes import FLOW_STEP
from flows import consumer as consumer_module
from flows.consumer import FlowConsumer, start_delivery
from tests.campaigns.support import add_people
from tests.flows.support import active_flow, enrollments

DEFINITION = {
    "trigger": {"type": "api"},
    "start": "hold",
    "nodes": [{"id": "hold", "type": "wait", "seconds": 60, "next": "done"}, {"id": "done", "type": "exit"}],
    "settings": {"reentry": "once"},
}


async def _people(engine, workspace_id: uuid.UUID, group: str, n: int) -> list[uuid.UUID]:
    await add_people(engine, workspace_id, n, group)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM profiles WHERE workspace_id = :w AND traits->>'group' = :g ORDER BY email"),
            {"w": workspace_id, "g": group},
        )
        return [r[0] for r in rows]


def _entry(flow_id: uuid.UUID, workspace_id: uuid.UUID, profile_id: uuid.UUID, cause: str) -> EnterInput:
    return EnterInput(
        version=1,
        workflow_id=f"flow:{flow_id}:{profile_id}",
        payload={"cause": cause},
        reentry="once",
        step=StepInput(
            workspace_id=workspace_id,
            flow_id=flow_id,
            enrollment_id=enrollment_id(flow_id, profile_id, "", cause),
            profile_id=profile_id,
            seq=1,
            node_id="hold",
        ),
    )


async def _steps(engine, enrollment: uuid.UUID) -> list[tuple[int, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT seq, node_id FROM flow_steps WHERE enrollment_id = :e ORDER BY seq"),
            {"e": enrollment},
        )
        return [(r[0], r[1]) for r in rows]


async def test_enter_records_the_enrollment_and_its_first_step_once(
    engine, sessionmaker, settings, workspace
):
    ws = workspace.workspace_id
    flow_id = await active_flow(sessionmaker, ws, DEFINITION)
    (person,) = await _people(engine, ws, "enter", 1)
    async with httpx.AsyncClient() as http:
        flows = FlowActivities(engine, settings, http)
        first = _entry(flow_id, ws, person, "a")
        entered = await flows.enter_flow_enrollment(first)
        assert entered.status == "started" and entered.step is not None and entered.step.proceed
        # A retry of the same activity (its run's own enrollment) changes nothing.
        again = await flows.enter_flow_enrollment(first)
        assert again.status == "started" and again.step is not None and again.step.proceed
        (row,) = await enrollments(engine, flow_id)
        assert row["id"] == first.step.enrollment_id and row["current_node"] == "hold"
        assert row["payload"] == {"cause": "a"} and row["status"] == "running"
        assert await _steps(engine, row["id"]) == [(1, "hold")]
        # Another cause for the same person while that run is running: no second enrollment, no step.
        other = await flows.enter_flow_enrollment(_entry(flow_id, ws, person, "b"))
        assert other.status in ("already_enrolled", "refused") and other.step is None
        assert len(await enrollments(engine, flow_id)) == 1


async def test_begin_of_an_older_run_keeps_the_same_rules(engine, sessionmaker, settings, workspace):
    ws = workspace.workspace_id
    flow_id = await active_flow(sessionmaker, ws, DEFINITION)
    first_person, second_person = await _people(engine, ws, "begin", 2)
    graph = FlowGraph.model_validate(DEFINITION)

    def run(profile_id: uuid.UUID, cause: str) -> BeginInput:
        return BeginInput(
            run=FlowRunInput(
                workspace_id=ws,
                flow_id=flow_id,
                version=1,
                enrollment_id=enrollment_id(flow_id, profile_id, "", cause),
                profile_id=profile_id,
                graph=graph,
                payload={"cause": cause},
            ),
            workflow_id=f"flow:{flow_id}:{profile_id}",
        )

    async with httpx.AsyncClient() as http:
        flows = FlowActivities(engine, settings, http)
        assert (await flows.begin_flow_enrollment(run(first_person, "a"))).status == "started"
        assert (await flows.begin_flow_enrollment(run(first_person, "a"))).status == "started"  # its retry
        assert (await flows.begin_flow_enrollment(run(first_person, "b"))).status in (
            "already_enrolled",
            "refused",
        )
        # The older path records no step (its run records the first one next).
        rows = await enrollments(engine, flow_id)
        assert [r["profile_id"] for r in rows] == [first_person]
        assert rows[0]["payload"] == {"cause": "a"} and await _steps(engine, rows[0]["id"]) == []
        # Both paths see each other's enrollments: `once` refuses the person after either.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE flow_enrollments SET status = 'completed' WHERE flow_id = :f"), {"f": flow_id}
            )
        refused = await flows.enter_flow_enrollment(_entry(flow_id, ws, first_person, "c"))
        assert refused.status == "refused" and refused.step is None
        assert (
            await flows.enter_flow_enrollment(_entry(flow_id, ws, second_person, "a"))
        ).status == "started"


def _start(ws: uuid.UUID, flow_id: uuid.UUID, definition: dict, person: uuid.UUID, cause: str, key: str = ""):
    event = FlowEvent(id=uuid.uuid4(), name="Signed Up", occurred_at=datetime.now(UTC))
    graph = FlowGraph.model_validate(definition)
    return start_delivery(ws, flow_id, 1, graph, person, key, event, [1], cause=cause)


async def test_the_consumer_records_enrollments_before_starting_their_runs(
    engine, sessionmaker, settings, workspace, monkeypatch
):
    monkeypatch.setattr(consumer_module, "_ENTER_SLICE", 2)  # the batch below spans two transactions
    ws = workspace.workspace_id
    flow_id = await active_flow(sessionmaker, ws, DEFINITION)
    first, second, third = await _people(engine, ws, "consumer", 3)
    consumer = FlowConsumer(engine)
    # One call: two people, and a second cause for the first person in the same batch.
    starts = [
        _start(ws, flow_id, DEFINITION, first, "a"),
        _start(ws, flow_id, DEFINITION, second, "a"),
        _start(ws, flow_id, DEFINITION, first, "b"),
    ]
    kept = await consumer._enter(starts)
    assert [d.arg.profile_id for d in kept] == [first, second]
    assert all(d.arg.entered for d in kept) and not starts[2].arg.entered
    assert all(d.search[FLOW_STEP] == "hold" for d in kept)  # the runs start showing their first node
    rows = await enrollments(engine, flow_id)
    assert sorted(r["profile_id"] for r in rows) == sorted([first, second])
    for row in rows:
        assert row["status"] == "running" and row["current_node"] == "hold"
        assert row["workflow_id"] == f"flow:{flow_id}:{row['profile_id']}"
        assert await _steps(engine, row["id"]) == [(1, "hold")]
    # The same event again (Temporal refused the start): its own running
    # enrollment is found and the run goes again, nothing new is written.
    (again,) = await consumer._enter([_start(ws, flow_id, DEFINITION, first, "a")])
    assert again.arg.entered and again.arg.enrollment_id == starts[0].arg.enrollment_id
    assert len(await enrollments(engine, flow_id)) == 2
    # `once`: after the enrollment ended, a new cause is refused, and the
    # run's own path (`enter_flow_enrollment`) agrees.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE flow_enrollments SET status = 'completed' WHERE flow_id = :f"), {"f": flow_id}
        )
    assert await consumer._enter([_start(ws, flow_id, DEFINITION, first, "c")]) == []
    async with httpx.AsyncClient() as http:
        flows = FlowActivities(engine, settings, http)
        assert (await flows.enter_flow_enrollment(_entry(flow_id, ws, second, "d"))).status == "refused"
        # ...and the consumer sees what that path recorded.
        assert (await flows.enter_flow_enrollment(_entry(flow_id, ws, third, "e"))).status == "started"
    assert await consumer._enter([_start(ws, flow_id, DEFINITION, third, "f")]) == []
    assert len(await enrollments(engine, flow_id)) == 3


async def test_a_flow_with_an_exit_condition_keeps_the_runs_own_first_activity(
    engine, sessionmaker, workspace
):
    ws = workspace.workspace_id
    definition = {
        **DEFINITION,
        "settings": {
            "reentry": "always",
            "exit_condition": {"type": "trait", "path": "plan", "op": "eq", "value": "churned"},
        },
    }
    flow_id = await active_flow(sessionmaker, ws, definition)
    (person,) = await _people(engine, ws, "exit-condition", 1)
    (kept,) = await FlowConsumer(engine)._enter([_start(ws, flow_id, definition, person, "a")])
    # Its run checks the condition in `enter_flow_enrollment`: nothing is recorded here.
    assert not kept.arg.entered and await enrollments(engine, flow_id) == []
