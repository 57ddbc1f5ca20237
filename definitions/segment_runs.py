"""Inputs and results of the segment workflows and activities."""

from __future__ import annotations

import uuid
from datetime import datetime

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


class DueCursor(BaseModel):
    """Where the next page of due segments starts: after this segment, in
    (computed_at, id) order, never-computed segments first."""

    computed_at: datetime | None
    segment_id: uuid.UUID


class DueSegmentsInput(BaseModel):
    """Refresh every segment whose interval has passed, a page at a time.

    `limit` is the page size; `after`, `as_of` and `started` carry a drain
    across pages and continue-as-new (a run begins with none of them)."""

    limit: int = Field(500, ge=1, le=1000)
    concurrency: int = Field(20, ge=1, le=500, description="Refreshes running at once.")
    pages_per_run: int = Field(
        20, ge=1, description="Pages before continuing as new, if Temporal has not suggested it sooner."
    )
    after: DueCursor | None = None
    as_of: datetime | None = Field(
        None, description="Due as of this time (the first page's), so a drain ends."
    )
    started: int = Field(0, ge=0, description="Refreshes started by earlier runs of this drain.")


class SegmentRef(BaseModel):
    """A segment and its workspace."""

    segment_id: uuid.UUID
    workspace_id: uuid.UUID


class DueSegments(BaseModel):
    """One page of segments to refresh, and where the next page starts
    (None: this was the last)."""

    segments: list[SegmentRef]
    as_of: datetime | None = None
    next: DueCursor | None = None


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
