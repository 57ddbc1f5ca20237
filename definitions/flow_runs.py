"""Inputs, signals and results of `FlowRunWorkflow` and its activities.
Pure (pydantic + stdlib): imported by workflow code in the sandbox.

Payloads stay small: the graph of the enrollment's version (bounded by
`definitions.flows.MAX_NODES`), ids, and the properties of the events a run
waits for (at most 32 KB each, as tracked)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from definitions.flows import FlowGraph, FrequencyCap, QuietHours

ENROLLMENT_NAMESPACE = uuid.UUID("6f1c0f1e-2d59-4c55-9b2a-6a1f3f8e7a10")

# Signals of FlowRunWorkflow.
TRIGGER_SIGNAL = "trigger"  # the start signal: the event that enrolled the person
EVENT_SIGNAL = "event"  # an event the run listens for (waits, goal, exit events)
EXIT_SIGNAL = "exit"  # the API, an archive or a merge asks the run to leave
RESUME_SIGNAL = "resume"  # the flow was activated again after a pause
# Outbox `event_name` of an exit request (event_id: the enrollment id).
EXIT_ANNOUNCEMENT = "$exit"
# Outbox `event_name` of a resume after a pause (event_id: the enrollment id).
RESUME_ANNOUNCEMENT = "$resume"
# Outbox `event_name` of a date-trait trigger that is due (event_id: the
# enrollment id, message_id: the flow id, occurred_at: the date it is for).
DATE_ANNOUNCEMENT = "$date"


def enrollment_id(flow_id: object, profile_id: object, enrollment_key: str, cause: object) -> uuid.UUID:
    """Deterministic per cause (the trigger event id, or an API request id),
    so a redelivered trigger can never enroll twice."""
    return uuid.uuid5(ENROLLMENT_NAMESPACE, f"{flow_id}:{profile_id}:{enrollment_key}:{cause}")


def key_value(value: Any) -> str:
    """An enrollment-key property as text: strings as they are, other JSON
    values (numbers, booleans) in their JSON spelling."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


class FlowEvent(BaseModel):
    """An event as a run sees it."""

    id: uuid.UUID
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime


class ExitRequest(BaseModel):
    """The `exit` (and `resume`) signal's argument."""

    reason: str = "exited"


class FlowRunInput(BaseModel):
    """Everything a run needs: the version's graph travels with it, so a
    replay needs nothing else. `resume` carries state across continue-as-new."""

    workspace_id: uuid.UUID
    flow_id: uuid.UUID
    version: int
    enrollment_id: uuid.UUID
    profile_id: uuid.UUID
    enrollment_key: str = ""
    graph: FlowGraph
    trigger: FlowEvent | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    resume: FlowResume | None = None
    # True when the outbox consumer recorded the enrollment and its first
    # step before starting the run (flows.runs_repository.enter_many): the
    # run goes straight to its first node. Runs started otherwise (the API,
    # a flow with an exit condition, histories from before) record them in
    # their first activity.
    entered: bool = False


class FlowResume(BaseModel):
    """Where a run that continued as new picks up."""

    node_id: str
    seq: int
    entered_at: datetime
    buffered: list[FlowEvent] = Field(default_factory=list)
    seen: list[uuid.UUID] = Field(default_factory=list)


class FlowRunResult(BaseModel):
    """How the enrollment ended."""

    enrollment_id: uuid.UUID
    status: str  # completed | exited | converted | failed | refused | already_enrolled
    last_node: str | None = None


class BeginInput(BaseModel):
    """Record the enrollment (re-entry rules enforced in PostgreSQL)."""

    run: FlowRunInput
    workflow_id: str


class BeginResult(BaseModel):
    """`started`, or why not (`refused` by re-entry, `already_enrolled`)."""

    status: str


class StepInput(BaseModel):
    """The run reached `node_id` over `edge` of the previous node."""

    workspace_id: uuid.UUID
    flow_id: uuid.UUID
    enrollment_id: uuid.UUID
    profile_id: uuid.UUID
    seq: int
    node_id: str
    previous_edge: str | None = None
    exit_condition: dict[str, Any] | None = None


class StepResult(BaseModel):
    """Go on, or stop because the enrollment left (`exited`) meanwhile
    (API, archive, merge collision) or the exit condition holds."""

    proceed: bool
    reason: str | None = None
    paused: bool = False


class EnterInput(BaseModel):
    """Record the enrollment and enter its first step in one transaction
    (`enter_flow_enrollment`). Carries what re-entry needs, not the graph."""

    enrollment_key: str = ""
    version: int
    workflow_id: str
    trigger_id: uuid.UUID | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    reentry: str
    reentry_after_seconds: float = 0
    step: StepInput


class EnterResult(BaseModel):
    """`status` as `BeginResult`; `step` (the first step's verdict) when started."""

    status: str
    step: StepResult | None = None


class FinishInput(BaseModel):
    """The run ended with `status` at `seq` (the last step left over `edge`)."""

    workspace_id: uuid.UUID
    enrollment_id: uuid.UUID
    status: str
    seq: int
    edge: str | None = None
    converted: bool = False


class ConditionInput(BaseModel):
    """Evaluate ordered conditions for a profile now; the first that holds wins."""

    workspace_id: uuid.UUID
    profile_id: uuid.UUID
    conditions: list[dict[str, Any]]


class ConditionResult(BaseModel):
    """Index of the first condition that holds, or -1."""

    index: int


class WaitUntilInput(BaseModel):
    """Seconds until a time of day in the person's timezone (or a date trait ± days)."""

    workspace_id: uuid.UUID
    profile_id: uuid.UUID
    time_of_day: str
    trait: str | None = None
    offset_days: int = 0


class WaitResult(BaseModel):
    """How long to sleep (0: the moment has passed)."""

    seconds: float


class FlowEmailInput(BaseModel):
    """Prepare a send: a message row linked to the flow, version, node and enrollment."""

    workspace_id: uuid.UUID
    flow_id: uuid.UUID
    version: int
    node_id: str
    enrollment_id: uuid.UUID
    profile_id: uuid.UUID
    template_id: uuid.UUID
    overrides: dict[str, Any] = Field(default_factory=dict)
    transactional: bool = False
    data: dict[str, Any] = Field(default_factory=dict)
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None
    topic: str | None = None


class FlowEmailPrepared(BaseModel):
    """`ready` with the message to send; `paused` (the flow is paused: ask
    again later) or `wait` (quiet hours, or a frequency cap in delay mode:
    ask again after `retry_seconds`); `skipped` (no address, or capped)."""

    status: str
    message_id: uuid.UUID | None = None
    reason: str | None = None
    retry_seconds: float = 0.0


class UpdateProfileInput(BaseModel):
    """Merge-patch a profile's traits through the profiles service."""

    workspace_id: uuid.UUID
    profile_id: uuid.UUID
    traits: dict[str, Any]


class WebhookInput(BaseModel):
    """POST the person, the trigger and the payload, signed."""

    workspace_id: uuid.UUID
    flow_id: uuid.UUID
    enrollment_id: uuid.UUID
    profile_id: uuid.UUID
    node_id: str
    url: str
    timeout_seconds: float
    trigger: FlowEvent | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


FlowRunInput.model_rebuild()


class DateTriggersInput(BaseModel):
    """Start argument of `FlowDateTriggersWorkflow` (nothing to choose yet:
    every active date-triggered flow is looked at)."""


class DateTriggersResult(BaseModel):
    """Date-trait enrollments announced by one pass."""

    announced: int
