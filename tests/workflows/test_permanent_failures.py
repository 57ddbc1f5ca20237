"""Permanent failures fail fast: a missing row or an invalid stored
definition ends the activity on its first attempt, as a non-retryable
application error, instead of eight (or twenty) retries."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from core.temporal import WorkflowStart, start_workflow
from definitions import workflow_ids
from definitions.messages import SendEmailInput

PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}


async def _activity_attempts(handle: WorkflowHandle) -> list[int]:
    """The attempt number each scheduled activity ended on."""
    history = await handle.fetch_history()
    return [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


def _permanent_cause(failure: WorkflowFailureError) -> ApplicationError:
    cause = failure.cause
    assert isinstance(cause, ActivityError), cause
    assert cause.retry_state == RetryState.NON_RETRYABLE_FAILURE
    assert isinstance(cause.cause, ApplicationError) and cause.cause.non_retryable
    return cause.cause


async def test_send_of_a_missing_message_fails_on_the_first_attempt(
    temporal_client, worker, settings, workspace
):
    message_id = uuid.uuid4()  # no such row
    handle = await start_workflow(
        temporal_client,
        WorkflowStart(
            "SendMessageWorkflow",
            SendEmailInput(workspace_id=workspace.workspace_id, message_id=message_id),
            id=workflow_ids.message(message_id),
        ),
        settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=30)
    assert _permanent_cause(failed.value).type == "MessageMissing"
    assert await _activity_attempts(handle) == [1]


async def test_refresh_of_an_invalid_stored_definition_fails_on_the_first_attempt(
    api, worker, engine, temporal_client
):
    seg = (await api.post("/api/v1/segments", json={"name": "Broken", "definition": PRO})).json()
    # A definition that was valid when saved but no longer parses (e.g. an
    # operator since removed): no retry can fix it.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE segments SET definition = CAST(:d AS jsonb) WHERE id = :id"),
            {"d": json.dumps(PRO | {"op": "no-such-operator"}), "id": seg["id"]},
        )
    r = await api.post(f"/api/v1/segments/{seg['id']}/recalculate", params={"wait": 30})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed"
    handle = temporal_client.get_workflow_handle(r.json()["workflow_id"])
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert _permanent_cause(failed.value).type == "ValidationFailed"
    assert await _activity_attempts(handle) == [1]
