"""Request and response models of the segments API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from core.validation import NotNull
from definitions.segments import Condition


class SegmentCreate(BaseModel):
    """A new segment: a name and a condition tree (see definitions/segments.py)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Repeat buyers"])
    description: str | None = Field(None, max_length=2000)
    definition: Condition = Field(
        examples=[
            {
                "type": "all",
                "conditions": [
                    {"type": "trait", "path": "plan", "op": "eq", "value": "pro"},
                    {
                        "type": "event",
                        "name": "Order Completed",
                        "count": {"op": ">=", "value": 2},
                        "within": {"last": 30, "unit": "days"},
                    },
                ],
            }
        ]
    )


class SegmentUpdate(BaseModel):
    """Change name, description or definition (a new definition bumps the version)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    definition: Annotated[Condition | None, NotNull] = None


class SegmentEstimateRequest(BaseModel):
    """An unsaved definition to count."""

    model_config = ConfigDict(extra="forbid")

    definition: Condition
    sample_size: int = Field(10, ge=0, le=100)


class SegmentOut(BaseModel):
    """A saved segment."""

    id: uuid.UUID
    name: str
    description: str | None
    definition: dict[str, Any]
    version: int
    member_count: int | None = Field(description="Members at the last refresh (null before the first).")
    computed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SegmentPage(BaseModel):
    """One page of segments."""

    data: list[SegmentOut]
    next_cursor: str | None


class MemberOut(BaseModel):
    """A member of a segment."""

    profile_id: uuid.UUID
    email: str | None
    external_id: str | None
    entered_at: datetime


class MemberPage(BaseModel):
    """One page of members, as of the last refresh."""

    data: list[MemberOut]
    next_cursor: str | None


class ProfileSample(BaseModel):
    """A profile in an estimate's sample."""

    id: uuid.UUID
    email: str | None
    external_id: str | None
    traits: dict[str, Any]


class SegmentEstimate(BaseModel):
    """How many profiles match now, and a few of them."""

    count: int
    sample: list[ProfileSample]
    evaluated_at: datetime
    duration_ms: float


class RefreshOut(BaseModel):
    """A refresh run: its Temporal workflow and, once done, the new count."""

    workflow_id: str
    run_id: str | None
    status: str = Field(description="running or completed")
    member_count: int | None = None
    entered: int | None = None
    exited: int | None = None
    temporal_ui: str | None = None
