"""Payloads the tracking API accepts.

Both the Segment spec (`userId`, `anonymousId`, `messageId`, `timestamp`,
`context`, `event`, `traits`) and this project's README form (`email`,
`name`, `properties`, snake_case ids) validate into the same models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from core.validation import check_email

MAX_ID_LENGTH = 255


def _coerce_id(value: Any) -> Any:
    # Segment lets ids be numbers; store them as text.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value or None
    return value


_ShortText = Annotated[str, Field(max_length=MAX_ID_LENGTH)]
Identifier = Annotated[_ShortText | None, BeforeValidator(_clean_text), BeforeValidator(_coerce_id)]
Name = Annotated[_ShortText | None, BeforeValidator(_clean_text)]


def _alias(*names: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*names))


class CallBase(BaseModel):
    """Fields every call shares: identity, idempotency, time and context."""

    model_config = ConfigDict(extra="ignore", str_max_length=32_768)

    user_id: Identifier = _alias("userId", "user_id")
    anonymous_id: Identifier = _alias("anonymousId", "anonymous_id")
    email: Name = None
    message_id: Identifier = _alias("messageId", "message_id")
    # Its UTC offset and range are checked when the call is flattened
    # (tracking/items.py), before the writer.
    timestamp: datetime | None = _alias("timestamp", "occurred_at", "originalTimestamp")
    # When the client sent the call, by its own clock (Segment's `sentAt`):
    # corrects the timestamps of browser and mobile calls for clock skew
    # (tracking/segment.py).
    sent_at: datetime | None = _alias("sentAt", "sent_at")
    context: dict[str, Any] | None = None

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        checked = check_email(value)
        return checked.lower() if checked else None

    def has_identity(self) -> bool:
        """True when at least one of userId, anonymousId or email is given."""
        return bool(self.user_id or self.anonymous_id or self.email)


class TrackCall(CallBase):
    """`POST /track`: an event the person did. `event` (Segment) or `name`."""

    event: Name = _alias("event", "name")
    properties: dict[str, Any] = Field(default_factory=dict)


class PageCall(CallBase):
    """`POST /page`: a page view, stored as the event `Page Viewed`."""

    name: Name = None
    category: Name = None
    properties: dict[str, Any] = Field(default_factory=dict)


class IdentifyCall(CallBase):
    """`POST /identify`: who the person is; traits merge into the profile."""

    traits: dict[str, Any] = Field(default_factory=dict)
    name: Name = None


class AliasCall(CallBase):
    """`POST /alias`: `previousId` (an anonymous or former user id) is `userId`."""

    previous_id: Identifier = _alias("previousId", "previous_id")


class ScreenCall(PageCall):
    """`POST /v1/screen` (Segment): a mobile screen view, stored as the event `Screen Viewed`."""


class GroupCall(CallBase):
    """`POST /v1/group` (Segment): the person belongs to `groupId`; its
    `traits` are kept on the profile under the trait `group_<groupId>`."""

    group_id: Identifier = _alias("groupId", "group_id")
    traits: dict[str, Any] = Field(default_factory=dict)


CALL_TYPES: dict[str, type[CallBase]] = {
    "track": TrackCall,
    "page": PageCall,
    "identify": IdentifyCall,
    "alias": AliasCall,
    "screen": ScreenCall,
    "group": GroupCall,
}


class WriteResponse(BaseModel):
    """What every tracking call answers once its events are committed."""

    success: bool = True
    accepted: int = Field(description="Events stored by this request.")
    duplicates: int = Field(0, description="Events skipped because their messageId was already stored.")
