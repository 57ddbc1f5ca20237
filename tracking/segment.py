"""Segment's HTTP Tracking API on the tracking host.

Segment's libraries, pointed at this host, work unchanged:

- **Paths.** `/v1/identify|track|page|screen|group|alias|batch` (the HTTP
  Tracking API; server libraries post `/v1/batch`), `/v1/import` (its old
  name for batch), and the one-letter paths analytics.js (analytics-next)
  posts to under its `apiHost` (default `api.segment.io/v1`):
  `${apiHost}/${type[0]}` for single calls (`/v1/i`, `/v1/t`, `/v1/p`,
  `/v1/s`, `/v1/g`, `/v1/a`), `/v1/b` for its batching delivery strategy
  and `/v1/m` for its own performance metrics (accepted and discarded);
  the same without `/v1` for an `apiHost` that is the bare host.
- **Auth.** Basic auth with the write key as user name, or `writeKey` in
  the body (tracking/ingest.py accepts both).
- **Bodies.** `Content-Encoding: gzip` (analytics-python's `gzip=True`,
  analytics-node's batch), decoded here with the same size limit as plain
  bodies, so a small compressed body cannot expand past it.
- **Clock skew.** Browser and mobile calls carry the client's `timestamp`
  and `sentAt` from the same wrong clock; Segment stores
  `timestamp - sentAt + receivedAt` for them, and so does this module
  (`corrected_timestamp`). Server libraries' timestamps are kept as sent.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import BadRequest, PayloadTooLarge

_KINDS = ("identify", "track", "page", "screen", "group", "alias")
SINGLE_CALL_PATHS: dict[str, str] = {f"/v1/{kind}": kind for kind in _KINDS}
"""Segment paths that take one call, and the call type each takes."""

BATCH_PATHS = ("/v1/batch",)
"""Segment paths that take `{"batch": [...]}`."""

SHORT_PATHS: dict[str, str] = {
    # analytics-next's standard delivery: `${apiHost}/${event.type.charAt(0)}`,
    # with apiHost `host/v1` (Segment's default) or the bare host.
    **{f"/v1/{kind[0]}": f"/v1/{kind}" for kind in _KINDS},
    **{f"/{kind[0]}": f"/v1/{kind}" for kind in _KINDS},
    # Its batching delivery strategy, and the HTTP API's old name for batch.
    "/v1/b": "/v1/batch",
    "/b": "/v1/batch",
    "/v1/import": "/v1/batch",
}
"""Other names of Segment paths: each is served exactly as the path it
names (the same endpoint object), and only that one is in the OpenAPI spec."""

METRICS_PATHS = frozenset({"/v1/m", "/m"})
"""Where analytics-next reports its own counters: answered, not stored."""
METRICS_MAX_BYTES = 64 * 1024

# Libraries whose calls carry a device clock (analytics.js and the mobile
# SDKs, and this project's own browser SDK); calls with a browser user agent
# count too. Server libraries (analytics-node, -python, -go, ...) are trusted.
CLIENT_LIBRARIES = frozenset(
    {
        "analytics.js",
        "analytics-next",
        "analytics-ios",
        "analytics-android",
        "analytics-kotlin",
        "analytics-swift",
        "analytics-react-native",
        "analytics-flutter",
        "@marketing-platform/sdk",
    }
)

GROUP_TRAIT_PREFIX = "group_"
MAX_TIMEZONE_LENGTH = 64


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body without its `Content-Encoding` (gzip or deflate);
    413 when it inflates past `limit` bytes, 400 when it is not valid."""
    if not encoding or encoding == "identity":
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body inflates past {limit} bytes; the limit here is {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"body is truncated {encoding}")
    return data


def is_client_call(context: dict[str, Any] | None) -> bool:
    """Whether a call comes from a browser or a device (whose clock may be
    wrong), judged by its context: a client library or a user agent."""
    if not context:
        return False
    library = context.get("library")
    if isinstance(library, dict) and library.get("name") in CLIENT_LIBRARIES:
        return True
    return isinstance(context.get("userAgent"), str)


def corrected_timestamp(timestamp: datetime, sent_at: datetime, received_at: datetime) -> datetime:
    """Segment's correction: the call happened `sent_at - timestamp` before
    it was received. OverflowError past the datetime range (the caller
    answers 422)."""
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=received_at.tzinfo)
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=received_at.tzinfo)
    return received_at - (sent_at - timestamp)


@lru_cache(maxsize=1024)
def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def context_timezone(context: dict[str, Any] | None) -> str | None:
    """The IANA timezone in a call's `context.timezone` (what analytics.js,
    the mobile SDKs and this project's SDK send), if it is a known one."""
    if not context:
        return None
    zone = context.get("timezone")
    if isinstance(zone, str) and 0 < len(zone) <= MAX_TIMEZONE_LENGTH and "\x00" not in zone:
        return zone if _known_zone(zone) else None
    return None


def group_traits(group_id: str, traits: dict[str, Any]) -> dict[str, Any]:
    """Profile traits for a group call: the group's traits under `group_<id>`
    (with the id), so several groups of one person sit side by side."""
    return {GROUP_TRAIT_PREFIX + group_id: {**traits, "id": group_id}}
