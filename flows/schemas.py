"""Request and response models of the flows API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.validation import Email, JsonObject, NotNull

# An enrollment payload is stored with the enrollment and travels in the
# workflow input, so it stays as small as one tracked event.
MAX_PAYLOAD_BYTES = 32 * 1024

FlowStatus = Literal["draft", "active", "paused", "archived"]
EnrollmentStatus = Literal["running", "completed", "exited", "converted", "failed"]

_EXAMPLE_GRAPH = {
    "trigger": {"type": "event", "name": "Cart Updated", "enrollment_key": "properties.cart_id"},
    "start": "wait_buy",
    "nodes": [
        {
            "id": "wait_buy",
            "type": "wait_for_event",
            "name": "Order Completed",
            "match_key": True,
            "timeout_seconds": 3600,
            "on_event": "done",
            "on_timeout": "remind",
        },
        {"id": "remind", "type": "send_email", "template_id": "0192f1c4-0000-7000-8000-000000000001"},
        {"id": "done", "type": "exit"},
    ],
    "settings": {"reentry": "always", "goal": {"name": "Order Completed"}},
}


class FlowCreate(BaseModel):
    """A new flow: a name and a graph (see definitions/flows.py). It starts
    as a draft; `POST /flows/{id}/activate` lets people in."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Abandoned cart"])
    description: str | None = Field(None, max_length=2000)
    # Parsed by the service (not here) so a 422 can name the node by its id.
    definition: dict[str, Any] = Field(examples=[_EXAMPLE_GRAPH])


class FlowUpdate(BaseModel):
    """Rename, describe or redefine. A new definition of a flow that has
    been activated becomes a new version; a draft's is replaced in place."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    definition: Annotated[dict[str, Any] | None, NotNull] = None


class FlowSummary(BaseModel):
    """A flow as listed (without its definition)."""

    id: uuid.UUID
    name: str
    description: str | None
    status: FlowStatus
    version: int = Field(description="The version new enrollments take.")
    created_at: datetime
    updated_at: datetime


class FlowOut(FlowSummary):
    """A flow with the definition of its current version."""

    definition: dict[str, Any]


class FlowPage(BaseModel):
    """One page of flows, newest first."""

    data: list[FlowSummary]
    next_cursor: str | None


class FlowVersionOut(BaseModel):
    """One immutable version of a flow's graph."""

    version: int
    created_at: datetime
    definition: dict[str, Any]


class FlowVersionPage(BaseModel):
    """Versions, newest first."""

    data: list[FlowVersionOut]
    next_cursor: str | None


class EnrollRequest(BaseModel):
    """Enroll one person, named by exactly one of `profile_id`, `email` or
    `external_id`, with a payload the flow can use (`payload.*`)."""

    model_config = ConfigDict(extra="forbid")

    profile_id: uuid.UUID | None = None
    email: Email | None = Field(None, max_length=254, examples=["ada@example.com"])
    external_id: str | None = Field(None, min_length=1, max_length=255)
    payload: JsonObject = Field(default_factory=dict, examples=[{"coupon": "WELCOME10"}])

    @model_validator(mode="after")
    def _one_identity(self) -> EnrollRequest:
        given = [n for n in ("profile_id", "email", "external_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "name the person with exactly one of profile_id, email or external_id"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @field_validator("external_id", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        # Stored stripped by the profiles API and tracking, so looked up stripped.
        return value.strip() if isinstance(value, str) else value

    @field_validator("payload")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(orjson.dumps(value))  # storable: JsonObject checked it first
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload is {size} bytes as JSON; at most {MAX_PAYLOAD_BYTES}")
        return value


class EnrollOut(BaseModel):
    """The answer to `POST /flows/{id}/enroll`: the runtime `started` a run,
    found the person `already_enrolled` (a run with the same key is in
    progress), or re-entry `refused` them; with a link to the run."""

    enrollment_id: uuid.UUID | None
    workflow_id: str | None
    status: Literal["started", "already_enrolled", "refused"]
    temporal_ui: str | None = None


class SegmentEnrollRequest(BaseModel):
    """Enroll every current member of a segment once."""

    model_config = ConfigDict(extra="forbid")

    segment_id: uuid.UUID


class SegmentEnrollOut(BaseModel):
    """How a bulk enrollment went, by person."""

    enrolled: int
    already_enrolled: int
    refused: int


class EnrollmentOut(BaseModel):
    """One person's pass through a flow."""

    id: uuid.UUID
    profile_id: uuid.UUID
    version: int
    status: EnrollmentStatus | str
    current_node: str | None
    enrollment_key: str
    entered_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    converted_at: datetime | None
    workflow_id: str
    temporal_ui: str = Field(description="The run in the Temporal web UI.")


class ProfileEnrollment(EnrollmentOut):
    """An enrollment as a profile lists it: with its flow."""

    flow_id: uuid.UUID
    flow_name: str


class StepOut(BaseModel):
    """One node an enrollment passed through."""

    seq: int
    node_id: str
    edge: str | None
    outcome: str | None
    entered_at: datetime
    left_at: datetime | None


class EnrollmentDetail(EnrollmentOut):
    """An enrollment with its payload and the steps it took."""

    payload: dict[str, Any]
    steps: list[StepOut]


class EnrollmentPage(BaseModel):
    """One page of enrollments, newest first."""

    data: list[EnrollmentOut]
    next_cursor: str | None


class NodeStats(BaseModel):
    """Per node: steps that entered, wait there now, left, failed; the
    edges taken out of it; emails it sent (send_email nodes)."""

    node_id: str
    type: str | None = Field(description="The node's type in the current version (null: an older one's).")
    entered: int = 0
    waiting: int = 0
    completed: int = 0
    failed: int = 0
    edges: dict[str, int] = Field(default_factory=dict)
    emails_sent: int = 0
    emails_opened: int = 0
    emails_clicked: int = 0


class EnrollmentStats(BaseModel):
    """Enrollments by outcome; `conversion_rate` = converted / enrolled."""

    enrolled: int = 0
    running: int = 0
    completed: int = 0
    exited: int = 0
    failed: int = 0
    converted: int = 0
    conversion_rate: float = 0.0


class EmailStats(BaseModel):
    """Emails the flow sent, and how many were opened and clicked."""

    sent: int = 0
    opened: int = 0
    clicked: int = 0


class FlowStats(BaseModel):
    """A flow's funnel across all its versions."""

    flow_id: uuid.UUID
    enrollments: EnrollmentStats
    emails: EmailStats
    nodes: list[NodeStats]
