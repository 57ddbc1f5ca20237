"""Response models of the analytics API (`/api/v1/analytics`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Interval = Literal["hour", "day"]


class Point(BaseModel):
    """One bucket of a series: its start (UTC) and its count."""

    at: datetime
    count: int


class Series(BaseModel):
    """A named line: every bucket of the range, zeros included."""

    label: str
    points: list[Point]
    total: int


class EventSeries(BaseModel):
    """Counts of one event (or of all events) over time, with an optional
    breakdown by one property: a line per top value, and `(other)`."""

    name: str | None = Field(description="The event name; null for all events.")
    interval: Interval
    start: datetime
    end: datetime
    total: Series
    breakdown_by: str | None = None
    breakdown: list[Series] = Field(default_factory=list)
    as_of: datetime | None = Field(None, description="Events received up to this time are counted.")


class EventName(BaseModel):
    """An event name seen in the range and how often."""

    name: str
    count: int


class EventNames(BaseModel):
    """Event names of the range, most frequent first."""

    data: list[EventName]
    properties: list[str] = Field(default_factory=list, description="Property keys of `name`, when given.")


class EmailSeries(BaseModel):
    """Email engagement over time: a line per kind (sent, delivered,
    opened, clicked, bounced, ...), optionally for one flow, campaign or provider."""

    interval: Interval
    start: datetime
    end: datetime
    flow_id: uuid.UUID | None = None
    campaign_id: uuid.UUID | None = None
    provider: str | None = None
    series: list[Series]
    totals: dict[str, int]


class ProfileSeries(BaseModel):
    """New profiles per bucket and active profiles per day."""

    interval: Interval
    start: datetime
    end: datetime
    new_profiles: Series
    active_profiles: Series = Field(description="Distinct profiles with an event, per day.")


class FunnelStep(BaseModel):
    """How many reached this step, and the share of the previous step and of the first."""

    name: str
    count: int
    conversion_from_previous: float
    conversion_from_first: float


class Funnel(BaseModel):
    """Ordered steps within a window: a profile enters at its first step-1
    event in the range; it counts at step N when it did step N after its
    step N-1, within `window_hours` of its entry (the earliest such event
    being its step-N time). Read from rollups: exact, up to `as_of`."""

    start: datetime
    end: datetime
    window_hours: int
    steps: list[FunnelStep]
    as_of: datetime | None = Field(None, description="Events received up to this time are counted.")


class Overview(BaseModel):
    """Totals of the range, read from the rollups."""

    start: datetime
    end: datetime
    events: int
    new_profiles: int
    active_profiles_today: int
    emails: dict[str, int]
    running_flows: int
    as_of: datetime | None


class SegmentSizes(BaseModel):
    """A segment's member count over time (one sample per hour)."""

    segment_id: uuid.UUID
    points: list[Point]
