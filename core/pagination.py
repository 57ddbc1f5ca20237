"""Opaque cursors for keyset pagination, and the one way a page is cut
from rows fetched with `limit + 1`."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from core.errors import BadRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Item = TypeVar("Item")


def _cursor_after_id(item: Any) -> str:
    return encode_cursor(item.id)


def encode_cursor(last_id: uuid.UUID) -> str:
    """The cursor that continues after `last_id`."""
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> uuid.UUID | None:
    """The id a cursor continues after; BadRequest for a malformed cursor."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except ValueError:
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page") from None


def cut_page(
    rows: Sequence[Any],
    limit: int,
    to_item: Callable[[Any], Item],
    cursor_after: Callable[[Item], str] = _cursor_after_id,
) -> tuple[list[Item], str | None]:
    """Split rows fetched with `limit + 1` into the page's items and the
    cursor of the next page (None on the last page).

    The extra row only says that more follow; it is never returned.
    `cursor_after` names the key the next page starts after (the item's
    id, encoded, unless the listing is keyed otherwise).
    """
    items = [to_item(row) for row in rows[:limit]]
    more = len(rows) > limit and bool(items)
    return items, cursor_after(items[-1]) if more else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_time_cursor(at: datetime, row_id: uuid.UUID) -> str:
    """The cursor that continues after (at, row_id), for lists ordered by a time then an id."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    raw = micros.to_bytes(8, "big", signed=True) + row_id.bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_time_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """(at, id) a page continues after; BadRequest when malformed."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(raw) != 24:
            raise ValueError(cursor)
        micros = int.from_bytes(raw[:8], "big", signed=True)
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=raw[8:])
    except (ValueError, OverflowError):
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page") from None
