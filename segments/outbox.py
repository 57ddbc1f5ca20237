"""The segments consumer of the outbox: rows announcing events and trait
changes a segment reads become one `profiles_changed` signal per
workspace's `SegmentRecheckWorkflow` (started if none runs)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from definitions import workflow_ids
from definitions.search_attributes import WORKSPACE_ID
from definitions.segment_runs import ProfilesChanged, RecheckInput
from events.dispatcher import Delivery
from events.outbox import OutboxRow
from workflows.segments import RECHECK_SIGNAL, SegmentRecheckWorkflow


async def recheck_deliveries(rows: Sequence[OutboxRow]) -> list[Delivery]:
    """Group claimed rows by workspace into re-check signals."""
    by_workspace: dict[uuid.UUID, list[OutboxRow]] = {}
    for row in rows:
        by_workspace.setdefault(row.workspace_id, []).append(row)
    return [
        Delivery(
            workflow=SegmentRecheckWorkflow.__name__,
            workflow_id=workflow_ids.segment_recheck(workspace_id),
            arg=RecheckInput(workspace_id=workspace_id),
            signal=RECHECK_SIGNAL,
            signal_arg=ProfilesChanged(
                event_ids=[r.event_id for r in group], profile_ids=[r.profile_id for r in group]
            ),
            rows=[r.id for r in group],
            search={WORKSPACE_ID: str(workspace_id)},
        )
        for workspace_id, group in by_workspace.items()
    ]
