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
from definitions.limits import MAX_FUTURE_SKEW, MAX_JSON_DEPTH, Unstorable, check_depth, check_offset
from tracking.schemas import AliasCall, CallBase, GroupCall, IdentifyCall, PageCall, ScreenCall, TrackCall
from tracking.segment import context_timezone, corrected_timestamp, group_traits, is_client_call

MAX_EVENT_BYTES = 32 * 1024
PAGE_EVENT = SystemEvent.PAGE_VIEWED.value
SCREEN_EVENT = SystemEvent.SCREEN_VIEWED.value


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


def _json(value: Any, where: str, check_nesting: bool) -> orjson.Fragment:
    if check_nesting:
        # Deeper values would be stored and then fail every read (jsonb and
        # orjson have nesting limits of their own).
        try:
            check_depth(value)
        except Unstorable as exc:
            raise ValidationFailed([{"loc": where, "msg": exc.msg}]) from None
    data = orjson.dumps(value)
    # PostgreSQL's jsonb cannot hold U+0000; refuse it here rather than
    # failing the whole group commit later.
    if b"\\u0000" in data:
        raise ValidationFailed([{"loc": where, "msg": "strings must not contain NUL characters"}])
    return orjson.Fragment(data)


def _occurred_at(ts: datetime | None, received_at: datetime, where: str) -> datetime | None:
    """When the event happened: its timestamp in UTC, or None when there is
    none or it is more than MAX_FUTURE_SKEW ahead of receipt (a wrong client
    clock: the event is kept at its receipt time). A UTC offset past ±14:00
    or an instant outside years 1..9999 is a 422 here: PostgreSQL would
    fail the whole group commit it shared with good calls."""
    if ts is None:
        return None
    # Checked here rather than by a pydantic validator (about 1 µs less per
    # call), and only when the offset is not zero (nearly every SDK sends Z).
    if ts.utcoffset():
        try:
            ts = check_offset(ts)
        except ValueError as exc:
            raise ValidationFailed([{"loc": f"{where}.timestamp", "msg": str(exc)}]) from None
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return None if ts - received_at > MAX_FUTURE_SKEW else ts


def to_item(
    call: CallBase,
    workspace_id: uuid.UUID,
    received_at: datetime,
    where: str = "body",
    check_nesting: bool = True,
    sent_at: datetime | None = None,
) -> IngestItem:
    """Flatten a validated call into an item; raises 4xx errors for calls
    that are well-typed but unusable (no identity, no event name, JSON
    nested past MAX_JSON_DEPTH). `check_nesting=False` skips the depth check
    when the caller knows the body cannot nest that deep. `sent_at` is the
    batch's `sentAt`, for calls that carry none of their own."""
    if isinstance(call, AliasCall):
        if not call.user_id or not call.previous_id:
            raise ValidationFailed([{"loc": where, "msg": "alias needs userId and previousId"}])
    elif isinstance(call, GroupCall) and not call.group_id:
        raise ValidationFailed([{"loc": f"{where}.groupId", "msg": "group needs a groupId"}])
    elif not call.has_identity():
        raise ValidationFailed([{"loc": where, "msg": "missing identity: give userId, anonymousId or email"}])

    event_type = event_name = properties = None
    traits: dict[str, Any] | None = None
    email = call.email
    if isinstance(call, TrackCall):
        if not call.event:
            raise ValidationFailed([{"loc": f"{where}.event", "msg": "event name is required"}])
        event_type, event_name = "track", call.event
        properties = _json(call.properties, f"{where}.properties", check_nesting)
    elif isinstance(call, PageCall):  # and ScreenCall, its subclass
        props = dict(call.properties)
        if call.name:
            props.setdefault("name", call.name)
        if call.category:
            props.setdefault("category", call.category)
        if isinstance(call, ScreenCall):
            event_type, event_name = "screen", SCREEN_EVENT
        else:
            event_type, event_name = "page", PAGE_EVENT
        properties = _json(props, f"{where}.properties", check_nesting)
    elif isinstance(call, IdentifyCall):
        traits = dict(call.traits)
        if call.name:
            traits.setdefault("name", call.name)
        trait_email = traits.get("email")
        if email is None and isinstance(trait_email, str) and "@" in trait_email:
            email = trait_email.strip().lower()
        # The browser's timezone lands on the profile, where flows and
        # campaigns read it to send in the person's local time.
        if "timezone" not in traits and (zone := context_timezone(call.context)) is not None:
            traits["timezone"] = zone
        _json(traits, f"{where}.traits", check_nesting)
    elif isinstance(call, GroupCall):
        traits = group_traits(call.group_id, call.traits)  # type: ignore[arg-type]
        _json(traits, f"{where}.traits", check_nesting)

    context = _json(call.context, f"{where}.context", check_nesting) if call.context else None
    timestamp, skewed = call.timestamp, False
    sent = call.sent_at or sent_at
    if timestamp is not None and sent is not None and is_client_call(call.context):
        try:
            timestamp, skewed = corrected_timestamp(timestamp, sent, received_at), True
        except (OverflowError, ValueError):
            raise ValidationFailed([{"loc": f"{where}.sentAt", "msg": "sentAt is out of range"}]) from None
    occurred_at = None if timestamp is None else _occurred_at(timestamp, received_at, where)
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
        occurred_at=occurred_at or received_at,
        received_at=received_at,
        message_id=call.message_id or str(uuid7()),
        # A clamped timestamp counts as none, so retries of the call are
        # pinned to its first receipt time (see the writer) and deduplicate;
        # so does a skew-corrected one (each retry is received at another
        # time, so its correction differs: the first try's time is kept).
        has_timestamp=occurred_at is not None and not skewed,
        has_message_id=call.message_id is not None,
    )


def may_nest_deeply(data: bytes) -> bool:
    """Whether any value in this JSON text could nest past MAX_JSON_DEPTH:
    not when it has no more brackets than that. Two C-speed scans (about
    0.2 µs for a typical event) spare the depth walk for nearly every call."""
    return data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH


def check_event_size(raw: Any, where: str) -> bool:
    """Refuse one event over 32 KB (measured as compact JSON). Returns
    whether the event may nest past MAX_JSON_DEPTH (see `may_nest_deeply`)."""
    try:
        data = orjson.dumps(raw)
    except orjson.JSONEncodeError:  # nested past orjson's 254 levels
        raise ValidationFailed(
            [{"loc": where, "msg": f"nested deeper than {MAX_JSON_DEPTH} levels"}]
        ) from None
    if len(data) > MAX_EVENT_BYTES:
        raise PayloadTooLarge(
            f"{where} is {len(data)} bytes; one event may be at most {MAX_EVENT_BYTES} bytes"
        )
    return data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH  # may_nest_deeply, inlined
