"""Inputs and results of the analytics rollup workflow and activity."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RollupInput(BaseModel):
    """Bring the rollups up to `now() - lag_seconds`, in slices of arrival time."""

    lag_seconds: float = Field(60.0, ge=0, le=3600)
    slice_hours: float = Field(6.0, gt=0, le=24 * 31)


class RollupResult(BaseModel):
    """What one pass counted."""

    events: int
    new_profiles: int
    slices: int
    watermark: datetime
