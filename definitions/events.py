"""The one place that names events the platform writes itself, and the
idempotency keys (`events.message_id`) of those events.

Pure (stdlib only): the segment language, the event writer, workflows and
tests import names from here; no system event name is typed anywhere else.

Id scheme: every stored event has a time-ordered UUID (version 7) as `id`,
made by `core.ids.uuid7` in Python or `mp_uuid7()` in SQL. Idempotency:
`(workspace_id, message_id, occurred_at)` is unique; tracked calls use the
caller's `messageId` (or a generated one), system events use the keys
built below, so a retried write stores nothing twice.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """`events.type`: how an event reached the platform."""

    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    SYSTEM = "system"


class SystemEvent(StrEnum):
    """Events the platform writes itself."""

    PAGE_VIEWED = "Page Viewed"
    SCREEN_VIEWED = "Screen Viewed"
    SEGMENT_ENTERED = "Segment Entered"
    SEGMENT_EXITED = "Segment Exited"
    EMAIL_SENT = "Email Sent"
    EMAIL_DELIVERED = "Email Delivered"
    EMAIL_OPENED = "Email Opened"
    EMAIL_CLICKED = "Email Clicked"
    EMAIL_BOUNCED = "Email Bounced"
    EMAIL_COMPLAINED = "Email Complained"
    EMAIL_UNSUBSCRIBED = "Email Unsubscribed"
    PROFILE_UPDATED = "Profile Updated"
    TOPIC_UNSUBSCRIBED = "Topic Unsubscribed"
    TOPIC_RESUBSCRIBED = "Topic Resubscribed"


EMAIL_EVENT_PREFIX = "Email "


def email_event(action: str) -> SystemEvent:
    """The event an email action (`sent`, `opened`, …) is stored as."""
    return SystemEvent(EMAIL_EVENT_PREFIX + action.capitalize())


class ListenerKind(StrEnum):
    """What an outbox listener watches: an event name, a top-level trait key,
    or profile merges (the surviving profile changed as a whole)."""

    EVENT = "event"
    TRAIT = "trait"
    MERGE = "merge"


MERGE_LISTENER_NAME = "*"


class Consumer(StrEnum):
    """Who reads outbox rows; each has one dispatcher entry."""

    SEGMENTS = "segments"
    FLOWS = "flows"


# -- idempotency keys of system events ----------------------------------------


def segment_event_key(segment_id: object, profile_id: object, entered: bool, at_ms: int) -> str:
    """`Segment Entered` / `Segment Exited` of one refresh or re-check."""
    return f"segment:{segment_id}:{'in' if entered else 'out'}:{profile_id}:{at_ms}"


def segment_event_key_prefix(segment_id: object, entered: bool) -> str:
    """The part of `segment_event_key` before the profile id (set-based SQL appends the rest)."""
    return f"segment:{segment_id}:{'in' if entered else 'out'}:"


def email_event_key(message_id: object, action: str, source: str | None = None) -> str:
    """An `Email …` event of one message. `source` tells repeated events
    apart (a provider's event id, one click); without it the action is
    recorded once per message (sent, unsubscribed)."""
    key = f"email:{message_id}:{action}"
    return f"{key}:{source}" if source else key


def profile_event_key(profile_id: object, change_id: object) -> str:
    """A `Profile Updated` event of one API change."""
    return f"profile:{profile_id}:updated:{change_id}"


def topic_event_key(profile_id: object, topic: str, subscribed: bool, change_id: object) -> str:
    """A `Topic Unsubscribed` / `Topic Resubscribed` event of one change of
    a person's choice (written only when the choice actually changed)."""
    return f"topic:{profile_id}:{topic}:{'in' if subscribed else 'out'}:{change_id}"
