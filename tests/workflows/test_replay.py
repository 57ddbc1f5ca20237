"""Replay guard: saved histories of real runs (tests/workflows/histories/,
written by `python -m tests.workflows.record_histories`) must replay
against the current workflow classes. A change to a workflow's command
sequence that running workflows would trip over fails here; guard such a
change with `workflow.patched()` (see README, "Contributing")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.sample_workflows import SendMessageWithExtraStep, SendMessageWithPatchedStep
from worker.registry import WORKFLOWS

HISTORIES = Path(__file__).resolve().parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def _workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def _replayer(workflows: list[type]) -> Replayer:
    return Replayer(workflows=workflows, data_converter=pydantic_data_converter)


def test_every_registered_workflow_has_a_saved_history():
    registered = {_name(cls) for cls in WORKFLOWS}
    recorded = {_workflow_type(path) for path in FILES}
    assert registered <= recorded, f"no saved history for {sorted(registered - recorded)}"


def _name(cls: type) -> str:
    # The name given to @workflow.defn (kept on the class by the SDK).
    return getattr(cls, "__temporal_workflow_definition").name


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_saved_history_replays(path: Path):
    result = await _replayer(WORKFLOWS).replay_workflow(_history(path))
    assert result.replay_failure is None


async def test_a_changed_command_sequence_fails_replay():
    # The guard guards: one extra activity call before the send, with no
    # patch, breaks the replay of a run recorded before the change.
    with pytest.raises(workflow.NondeterminismError):
        await _replayer([SendMessageWithExtraStep]).replay_workflow(
            _history(HISTORIES / "SendMessageWorkflow-sent.json")
        )


async def test_the_same_change_behind_patched_replays():
    result = await _replayer([SendMessageWithPatchedStep]).replay_workflow(
        _history(HISTORIES / "SendMessageWorkflow-sent.json")
    )
    assert result.replay_failure is None
