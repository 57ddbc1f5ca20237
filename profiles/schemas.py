"""Request and response models of the profiles API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.validation import Email, JsonObject, NotNull


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class ProfileCreate(BaseModel):
    """A profile made through the API; needs an email or an external id."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = Field(None, max_length=254, examples=["ada@example.com"])
    external_id: str | None = Field(None, min_length=1, max_length=255, examples=["user_42"])
    traits: JsonObject = Field(default_factory=dict, examples=[{"plan": "pro", "first_name": "Ada"}])

    @field_validator("external_id", mode="before")
    @classmethod
    def _ext(cls, value: Any) -> Any:
        return _strip(value)


class ProfileUpdate(BaseModel):
    """A partial update. `traits` is a JSON merge patch (RFC 7396): keys are
    merged recursively and a `null` value removes the key."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = Field(None, max_length=254)
    external_id: str | None = Field(None, min_length=1, max_length=255)
    traits: Annotated[JsonObject | None, NotNull] = None


class ProfileOut(BaseModel):
    """A profile as listed."""

    id: uuid.UUID
    email: str | None
    external_id: str | None
    traits: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    created_at: datetime
    updated_at: datetime


class EventOut(BaseModel):
    """One event of a profile's timeline."""

    id: uuid.UUID
    type: str
    name: str
    properties: dict[str, Any]
    occurred_at: datetime
    received_at: datetime
    message_id: str


class ProfileDetail(ProfileOut):
    """A profile with its identities and latest events."""

    anonymous_ids: list[str]
    topic_optouts: list[str] = Field(description="Keys of the subscription topics the person left")
    events: list[EventOut]


class ProfilePage(BaseModel):
    """One page of profiles; pass `next_cursor` as `cursor` for the next."""

    data: list[ProfileOut]
    next_cursor: str | None
