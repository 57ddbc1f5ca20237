"""Models of the workspace API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkspaceSettings(BaseModel):
    """Per-workspace settings."""

    model_config = ConfigDict(extra="ignore")

    segment_refresh_minutes: int = Field(5, ge=1, le=1440, description="How often dynamic segments refresh.")
