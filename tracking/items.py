"""The unit the writer commits: one validated call, flattened.

Endpoints turn validated payloads into `IngestItem`s; the group-commit
writer resolves their profiles and stores their events in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from core.errors import PayloadTooLarge, ValidationFailed
from core.ids import uuid7
from definitions.events import SystemEvent
from tracking.schemas import AliasCall, CallBase, IdentifyCall, PageCall, TrackCall

MAX_EVENT_BYTES = 32 * 1024
PAGE_EVENT = SystemEvent.PAGE_VIEWED.value


@dataclass(slots=True)
class IngestItem:
    """One call to store. `event_name` is None for identify and alias calls."""

    workspace_id: uuid.UUID
    user_id: str | None
    anonymous_id: str | None
    email: str | None
    previous_id: str | None
    event_type: str | None
    event_name: str | None
    properties: orjson.Fragment | None  # already-serialised JSON, embedded as is
    context: orjson.Fragment | None
    traits: dict[str, Any] | None
    occurred_at: datetime
    received_at: datetime
    message_id: str
    has_timestamp: bool
    has_message_id: bool
    event_id: uuid.UUID = field(default_factory=uuid7)
    profile_id: uuid.UUID | None = None


def _json(value: Any, where: str) -> orjson.Fragment:
    data = orjson.dumps(value)
    # PostgreSQL's jsonb cannot hold U+0000; refuse it here rather than
    # failing the whole group commit later.
    if b"\\u0000" in data:
        raise ValidationFailed([{"loc": where, "msg": "strings must not contain NUL characters"}])
    return orjson.Fragment(data)


def _utc(ts: datetime | None, received_at: datetime) -> datetime:
    if ts is None:
        return received_at
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


def to_item(
    call: CallBase, workspace_id: uuid.UUID, received_at: datetime, where: str = "body"
) -> IngestItem:
    """Flatten a validated call into an item; raises 4xx errors for calls
    that are well-typed but unusable (no identity, no event name)."""
    if isinstance(call, AliasCall):
        if not call.user_id or not call.previous_id:
            raise ValidationFailed([{"loc": where, "msg": "alias needs userId and previousId"}])
    elif not call.has_identity():
        raise ValidationFailed([{"loc": where, "msg": "missing identity: give userId, anonymousId or email"}])

    event_type = event_name = properties = None
    traits: dict[str, Any] | None = None
    email = call.email
    if isinstance(call, TrackCall):
        if not call.event:
            raise ValidationFailed([{"loc": f"{where}.event", "msg": "event name is required"}])
        event_type, event_name = "track", call.event
        properties = _json(call.properties, f"{where}.properties")
    elif isinstance(call, PageCall):
        props = dict(call.properties)
        if call.name:
            props.setdefault("name", call.name)
        if call.category:
            props.setdefault("category", call.category)
        event_type, event_name = "page", PAGE_EVENT
        properties = _json(props, f"{where}.properties")
    elif isinstance(call, IdentifyCall):
        traits = dict(call.traits)
        if call.name:
            traits.setdefault("name", call.name)
        trait_email = traits.get("email")
        if email is None and isinstance(trait_email, str) and "@" in trait_email:
            email = trait_email.strip().lower()
        _json(traits, f"{where}.traits")

    context = _json(call.context, f"{where}.context") if call.context else None
    return IngestItem(
        workspace_id=workspace_id,
        user_id=call.user_id,
        anonymous_id=call.anonymous_id,
        email=email,
        previous_id=call.previous_id if isinstance(call, AliasCall) else None,
        event_type=event_type,
        event_name=event_name,
        properties=properties,
        context=context,
        traits=traits,
        occurred_at=_utc(call.timestamp, received_at),
        received_at=received_at,
        message_id=call.message_id or str(uuid7()),
        has_timestamp=call.timestamp is not None,
        has_message_id=call.message_id is not None,
    )


def check_event_size(raw: Any, where: str) -> None:
    """Refuse one event over 32 KB (measured as compact JSON)."""
    size = len(orjson.dumps(raw))
    if size > MAX_EVENT_BYTES:
        raise PayloadTooLarge(f"{where} is {size} bytes; one event may be at most {MAX_EVENT_BYTES} bytes")
