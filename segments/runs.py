"""Start and observe segment refresh workflows from the API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle

from core.settings import Settings
from core.temporal import WorkflowStart, start_workflow
from definitions import workflow_ids
from definitions.search_attributes import WORKSPACE_ID
from definitions.segment_runs import SegmentRefreshInput, SegmentRefreshResult
from segments.schemas import RefreshOut
from workflows.segments import SegmentRefreshWorkflow


async def start_refresh(
    client: Client, settings: Settings, workspace_id: uuid.UUID, segment_id: uuid.UUID
) -> WorkflowHandle:
    """Start the segment's refresh, or join the one already running
    (ServiceUnavailable when Temporal is down)."""
    start = WorkflowStart(
        SegmentRefreshWorkflow.run,
        SegmentRefreshInput(segment_id=segment_id, workspace_id=workspace_id),
        id=workflow_ids.segment_refresh(segment_id),
        search_attributes={WORKSPACE_ID: workspace_id},
        execution_timeout=timedelta(seconds=settings.segment_refresh_timeout_seconds),
        result_type=SegmentRefreshResult,
    )
    return await start_workflow(client, start, settings.temporal_task_queue)


async def refresh_outcome(handle: WorkflowHandle, settings: Settings, wait_seconds: float) -> RefreshOut:
    """Wait up to `wait_seconds` for the run; report it either way."""
    ui = f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{handle.id}"
    try:
        result: SegmentRefreshResult = await asyncio.wait_for(handle.result(), timeout=wait_seconds)
    except WorkflowFailureError:
        # A permanent failure (e.g. an invalid stored definition): shown, not retried.
        return RefreshOut(workflow_id=handle.id, run_id=handle.result_run_id, status="failed", temporal_ui=ui)
    except TimeoutError:
        description = await handle.describe()
        status = (
            "running"
            if description.status == WorkflowExecutionStatus.RUNNING
            else description.status.name.lower()
        )
        return RefreshOut(workflow_id=handle.id, run_id=description.run_id, status=status, temporal_ui=ui)
    return RefreshOut(
        workflow_id=handle.id,
        run_id=handle.result_run_id or handle.run_id,
        status="completed",
        member_count=result.member_count,
        entered=result.entered,
        exited=result.exited,
        temporal_ui=ui,
    )
