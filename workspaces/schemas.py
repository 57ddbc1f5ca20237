"""Models of the workspace API."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
MAX_ALLOWED_ORIGINS = 100


class WorkspaceFrequencyCap(BaseModel):
    """At most `max_emails` marketing emails per person per `period_seconds`
    (campaigns, unless one sets `respect_frequency_cap: false`, and flows
    without a cap of their own); a send over it is skipped (`capped`)."""

    model_config = ConfigDict(extra="forbid")

    max_emails: int = Field(ge=1, le=1000)
    period_seconds: int = Field(ge=3600, le=366 * 24 * 3600)


class WorkspaceSettings(BaseModel):
    """Per-workspace settings."""

    model_config = ConfigDict(extra="ignore")

    segment_refresh_minutes: int = Field(5, ge=1, le=1440, description="How often dynamic segments refresh.")
    timezone: str = Field(
        "UTC",
        max_length=64,
        description="IANA timezone for flow waits and quiet hours of people without a `timezone` trait.",
    )

    frequency_cap: WorkspaceFrequencyCap | None = Field(
        None, description="The workspace's frequency cap on marketing email (None: no cap)."
    )

    allowed_origins: list[str] | None = Field(
        None,
        max_length=MAX_ALLOWED_ORIGINS,
        description=(
            "Browser origins (`https://shop.example.com`) allowed to send tracking calls with this "
            "workspace's public key; a call from any other origin gets 403. None: any origin."
        ),
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = []
        for raw in value:
            origin = raw.strip().rstrip("/").lower()
            if len(origin) > 255 or not _ORIGIN.match(origin):
                raise ValueError(f"{origin[:80]!r} is not an origin like https://shop.example.com")
            cleaned.append(origin)
        return sorted(set(cleaned))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value
