"""The flows consumer of the outbox.

For each announced event it finds (1) the running enrollments of that
person whose version listens for the event's name (wait-for-event, goal,
exit events) — a plain `event` signal to each; and (2) the active flows the
event triggers (event name and property filters; `Segment Entered/Exited`
of a segment trigger's segment) — a signal-with-start of
`FlowRunWorkflow` with the deterministic id of (flow, person, enrollment
key). Before starting runs it records their enrollments and first steps in
one transaction, where re-entry is decided (`_enter`); a run Temporal
refused is started again when its event is redelivered. `$exit` announcements (an API exit, an archive) become
`exit` signals. Events nobody listens for never reach a workflow.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from definitions import workflow_ids
from definitions.events import SystemEvent
from definitions.flow_runs import (
    DATE_ANNOUNCEMENT,
    EVENT_SIGNAL,
    EXIT_ANNOUNCEMENT,
    EXIT_SIGNAL,
    RESUME_ANNOUNCEMENT,
    RESUME_SIGNAL,
    TRIGGER_SIGNAL,
    ExitRequest,
    FlowEvent,
    FlowRunInput,
    enrollment_id,
    key_value,
)
from definitions.flows import EventTrigger, FlowGraph, Reentry, SegmentTrigger, listened_events
from definitions.search_attributes import FLOW_ID, FLOW_STEP, PROFILE_ID, WORKSPACE_ID
from definitions.segments import MISSING, compare, get_path
from events.dispatcher import Delivery
from events.outbox import OutboxRow
from flows import runs_repository as repo

WORKFLOW = "FlowRunWorkflow"
_ENTER_SLICE = 500  # enrollments recorded per transaction
# Outbox notices to running enrollments → the signal each becomes.
_NOTICES = {EXIT_ANNOUNCEMENT: EXIT_SIGNAL, RESUME_ANNOUNCEMENT: RESUME_SIGNAL}


class GraphCache:
    """Parsed graphs by (flow, version): versions are immutable."""

    def __init__(self, size: int = 1000) -> None:
        self._graphs: dict[tuple[uuid.UUID, int], FlowGraph] = {}
        self._size = size

    def get(self, flow_id: uuid.UUID, version: int, definition: Any) -> FlowGraph:
        """The graph of a version, parsed once."""
        key = (flow_id, version)
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= self._size:
                self._graphs.clear()
            graph = self._graphs[key] = FlowGraph.model_validate(definition)
        return graph


def trigger_key(graph: FlowGraph, event: FlowEvent) -> str | None:
    """The enrollment key this event triggers `graph` with ('' without a
    key), or None when it does not trigger it."""
    trigger = graph.trigger
    if isinstance(trigger, EventTrigger):
        if event.name != trigger.name:
            return None
        today = event.occurred_at.date()
        if not all(compare(f, event.properties, today) for f in trigger.where):
            return None
        if trigger.enrollment_key is None:
            return ""
        value = get_path(event.properties, trigger.enrollment_key.split(".")[1:])
        return None if value is MISSING or value is None else key_value(value)
    if isinstance(trigger, SegmentTrigger):
        wanted = SystemEvent.SEGMENT_ENTERED if trigger.on == "entered" else SystemEvent.SEGMENT_EXITED
        if event.name == wanted.value and event.properties.get("segment_id") == str(trigger.segment_id):
            return ""
    return None


def reentry_allows(graph: FlowGraph, latest: datetime | None, now: datetime) -> bool:
    """The cheap pre-check of re-entry (the enrollment's first activity is the real one)."""
    if latest is None:
        return True
    settings = graph.settings
    if settings.reentry == Reentry.ONCE:
        return False
    if settings.reentry == Reentry.AFTER:
        return latest <= now - timedelta(seconds=settings.reentry_after_seconds or 0)
    return True


def start_delivery(
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    version: int,
    graph: FlowGraph,
    profile_id: uuid.UUID,
    key: str,
    event: FlowEvent | None,
    rows: list[int],
    *,
    cause: object,
    payload: dict[str, Any] | None = None,
) -> Delivery:
    """Signal-with-start of one enrollment."""
    run = FlowRunInput(
        workspace_id=workspace_id,
        flow_id=flow_id,
        version=version,
        enrollment_id=enrollment_id(flow_id, profile_id, key, cause),
        profile_id=profile_id,
        enrollment_key=key,
        graph=graph,
        trigger=event,
        payload=payload or {},
    )
    signal_event = event or FlowEvent(id=run.enrollment_id, name="$enroll", occurred_at=datetime.now(UTC))
    return Delivery(
        workflow=WORKFLOW,
        workflow_id=workflow_ids.flow_run(flow_id, profile_id, key),
        arg=run,
        signal=TRIGGER_SIGNAL,
        signal_arg=signal_event,
        rows=rows,
        search={WORKSPACE_ID: str(workspace_id), PROFILE_ID: str(profile_id), FLOW_ID: str(flow_id)},
    )


class FlowConsumer:
    """Built once per worker with the engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._graphs = GraphCache()

    async def __call__(self, rows: Sequence[OutboxRow]) -> list[Delivery]:
        notices = [r for r in rows if r.event_name in _NOTICES]
        dates = [r for r in rows if r.event_name == DATE_ANNOUNCEMENT]
        rows = [r for r in rows if r.event_name not in _NOTICES and r.event_name != DATE_ANNOUNCEMENT]
        deliveries = await self._notices(notices) + await self._dates(dates)
        if not rows:
            return deliveries
        async with self._engine.connect() as conn:
            stored = await repo.events_by_key(conn, rows)
            live = await repo.live_flows(conn, sorted({r.workspace_id for r in rows}))
            people = sorted({(e["workspace_id"], e["profile_id"]) for e in stored.values()})
            running = await repo.running_enrollments(conn, people)
            by_person: dict[tuple[uuid.UUID, uuid.UUID], list[Any]] = defaultdict(list)
            for enrollment in running:
                by_person[(enrollment["workspace_id"], enrollment["profile_id"])].append(enrollment)
            flows_of: dict[uuid.UUID, list[Any]] = defaultdict(list)
            for flow in live:
                flows_of[flow["workspace_id"]].append(flow)
            candidates: list[tuple[Any, FlowGraph, uuid.UUID, str, FlowEvent, OutboxRow]] = []
            for row in rows:
                found = stored.get(row.event_id)
                if found is None:
                    continue  # erased since: nothing to deliver
                event = FlowEvent(
                    id=found["id"],
                    name=found["name"],
                    properties=found["properties"],
                    occurred_at=found["occurred_at"],
                )
                person = (found["workspace_id"], found["profile_id"])
                for enrollment in by_person.get(person, []):
                    graph = self._graphs.get(
                        enrollment["flow_id"], enrollment["version"], enrollment["definition"]
                    )
                    if event.name in listened_events(graph):
                        deliveries.append(
                            Delivery(WORKFLOW, enrollment["workflow_id"], None, EVENT_SIGNAL, event, [row.id])
                        )
                for flow in flows_of.get(found["workspace_id"], []):
                    graph = self._graphs.get(flow["id"], flow["version"], flow["definition"])
                    key = trigger_key(graph, event)
                    if key is not None:
                        candidates.append((flow, graph, found["profile_id"], key, event, row))
        starts = [
            start_delivery(
                flow["workspace_id"],
                flow["id"],
                flow["version"],
                graph,
                profile_id,
                key,
                event,
                [row.id],
                cause=event.id,
            )
            for flow, graph, profile_id, key, event, row in candidates
        ]
        return deliveries + await self._enter(starts)

    async def _enter(self, starts: list[Delivery]) -> list[Delivery]:
        """The starts to make, their enrollments recorded first.

        Most runs' enrollments and first steps are recorded here, a few
        hundred per transaction, before the runs start, where re-entry is decided
        (`repo.enter_many`); those runs are marked `entered`, so their first
        workflow task holds no activity. Starts that re-entry refuses, or
        whose person is enrolled already, are dropped (their outbox rows are
        done); a start Temporal refused finds its own enrollment running when
        the row comes again, and goes again. A flow with an exit condition
        keeps the run's own first activity, which checks it; those get only
        the cheap re-entry pre-check here."""
        if not starts:
            return []
        ready: list[tuple[FlowRunInput, Delivery]] = []
        checked: list[tuple[FlowRunInput, Delivery]] = []
        for delivery in starts:
            run = delivery.arg
            assert isinstance(run, FlowRunInput)
            (checked if run.graph.settings.exit_condition else ready).append((run, delivery))
        now = datetime.now(UTC)
        started: set[uuid.UUID] = set()
        # In slices: each holds an advisory lock per person until its commit,
        # and one outbox row of a batch request can announce thousands.
        for at in range(0, len(ready), _ENTER_SLICE):
            async with self._engine.begin() as conn:
                started |= await repo.enter_many(
                    conn, [(run, d.workflow_id) for run, d in ready[at : at + _ENTER_SLICE]]
                )
        latest: dict[tuple[uuid.UUID, uuid.UUID, str], datetime] = {}
        if checked:
            async with self._engine.connect() as conn:
                latest = await repo.earlier_enrollments(
                    conn, [(run.flow_id, run.profile_id, run.enrollment_key) for run, _ in checked]
                )
        kept: list[Delivery] = []
        for run, delivery in ready:
            if run.enrollment_id in started:
                run.entered = True  # the run skips its first `FlowStep` upsert: the start sets it
                delivery.search = {**delivery.search, FLOW_STEP: run.graph.start}
                kept.append(delivery)
        for run, delivery in checked:
            if reentry_allows(run.graph, latest.get((run.flow_id, run.profile_id, run.enrollment_key)), now):
                kept.append(delivery)
        return kept

    async def _dates(self, rows: Sequence[OutboxRow]) -> list[Delivery]:
        """Due date triggers: start each enrollment (its id was fixed by the
        announcement: flow, person and date)."""
        if not rows:
            return []
        async with self._engine.connect() as conn:
            live = await repo.live_flows(conn, sorted({r.workspace_id for r in rows}))
        flows = {str(f["id"]): f for f in live}
        starts = []
        for row in rows:
            flow = flows.get(row.message_id or "")
            if flow is None or row.occurred_at is None:
                continue  # paused or archived since: the date passes
            graph = self._graphs.get(flow["id"], flow["version"], flow["definition"])
            day = row.occurred_at.date().isoformat()
            event = FlowEvent(
                id=row.event_id, name=DATE_ANNOUNCEMENT, properties={"date": day}, occurred_at=row.occurred_at
            )
            starts.append(
                start_delivery(
                    flow["workspace_id"],
                    flow["id"],
                    flow["version"],
                    graph,
                    row.profile_id,
                    "",
                    event,
                    [row.id],
                    cause=f"date:{day}",
                )
            )
        return await self._enter(starts)

    async def _notices(self, rows: Sequence[OutboxRow]) -> list[Delivery]:
        """`$exit` and `$resume` rows: signal the enrollment's run."""
        if not rows:
            return []
        async with self._engine.connect() as conn:
            found = await conn.execute(
                text("SELECT id, workflow_id FROM flow_enrollments WHERE id = ANY(:ids)"),
                {"ids": [r.event_id for r in rows]},
            )
            workflow_ids = {r[0]: r[1] for r in found}
        return [
            Delivery(
                WORKFLOW, workflow_ids[r.event_id], None, _NOTICES[r.event_name or ""], ExitRequest(), [r.id]
            )
            for r in rows
            if r.event_id in workflow_ids
        ]
