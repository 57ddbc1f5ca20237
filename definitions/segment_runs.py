"""Inputs and results of the segment workflows and activities."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field


class SegmentRefreshInput(BaseModel):
    """Recompute one segment's members."""

    segment_id: uuid.UUID
    workspace_id: uuid.UUID


class SegmentRefreshResult(BaseModel):
    """Counts after a refresh; `found` is False when the segment was deleted."""

    segment_id: uuid.UUID
    found: bool = True
    member_count: int = 0
    entered: int = 0
    exited: int = 0
    duration_ms: float = 0.0


class DueSegmentsInput(BaseModel):
    """Ask for segments whose refresh interval has passed."""

    limit: int = Field(500, ge=1, le=1000)


class SegmentRef(BaseModel):
    """A segment and its workspace."""

    segment_id: uuid.UUID
    workspace_id: uuid.UUID


class DueSegments(BaseModel):
    """Segments to refresh now (at most the requested limit)."""

    segments: list[SegmentRef]


class RecheckInput(BaseModel):
    """Re-evaluate profiles of one workspace: the workflow's start argument
    (profiles still pending when it continued as new) and each activity's."""

    workspace_id: uuid.UUID
    profile_ids: list[uuid.UUID] = Field(default_factory=list, max_length=5000)
    batch_size: int = Field(500, ge=1, le=2000)


class ProfilesChanged(BaseModel):
    """Signal from the outbox dispatcher: these events (or profile changes,
    by change id) touched these profiles; parallel lists."""

    event_ids: list[uuid.UUID]
    profile_ids: list[uuid.UUID]


class RecheckResult(BaseModel):
    """What one batch of re-checks changed."""

    profiles: int
    entered: int
    exited: int
