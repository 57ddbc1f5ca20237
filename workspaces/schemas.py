"""Models of the workspace API."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WorkspaceSettings(BaseModel):
    """Per-workspace settings."""

    model_config = ConfigDict(extra="ignore")

    segment_refresh_minutes: int = Field(5, ge=1, le=1440, description="How often dynamic segments refresh.")
    timezone: str = Field(
        "UTC",
        max_length=64,
        description="IANA timezone for flow waits and quiet hours of people without a `timezone` trait.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value
