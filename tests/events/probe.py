"""A test consumer of the outbox: `ProbeWorkflow` records the event ids it
is signalled, dropping those it has seen (as every real consumer does),
and counts the redeliveries it dropped."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from pydantic import BaseModel
from temporalio import workflow

from events.dispatcher import Delivery
from events.outbox import OutboxRow

PROBE = "probe"


class ProbeStart(BaseModel):
    """The probe workflow's start argument."""

    workspace_id: uuid.UUID


class ProbeEvents(BaseModel):
    """One dispatch: event ids and their profiles (parallel lists)."""

    event_ids: list[uuid.UUID]
    profile_ids: list[uuid.UUID]


class ProbeState(BaseModel):
    """What the probe has applied, and how many redeliveries it dropped."""

    applied: list[uuid.UUID]
    dropped: int


@workflow.defn(name="ProbeWorkflow")
class ProbeWorkflow:
    """Applies each event id once; runs until cancelled."""

    def __init__(self) -> None:
        self._applied: dict[uuid.UUID, None] = {}
        self._dropped = 0

    @workflow.signal(name="events")
    def events(self, batch: ProbeEvents) -> None:
        for event_id in batch.event_ids:
            if event_id in self._applied:
                self._dropped += 1
            else:
                self._applied[event_id] = None

    @workflow.query(name="state")
    def state(self) -> ProbeState:
        return ProbeState(applied=list(self._applied), dropped=self._dropped)

    @workflow.run
    async def run(self, params: ProbeStart) -> None:
        await workflow.wait_condition(lambda: False)


def probe_workflow_id(workspace_id: object) -> str:
    return f"probe:{workspace_id}"


async def probe_deliveries(rows: Sequence[OutboxRow]) -> list[Delivery]:
    """One signal per workspace, like the segments consumer."""
    by_workspace: dict[uuid.UUID, list[OutboxRow]] = {}
    for row in rows:
        by_workspace.setdefault(row.workspace_id, []).append(row)
    return [
        Delivery(
            workflow="ProbeWorkflow",
            workflow_id=probe_workflow_id(ws),
            arg=ProbeStart(workspace_id=ws),
            signal="events",
            signal_arg=ProbeEvents(
                event_ids=[r.event_id for r in group], profile_ids=[r.profile_id for r in group]
            ),
            rows=[r.id for r in group],
        )
        for ws, group in by_workspace.items()
    ]
