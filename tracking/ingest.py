"""The tracking calls, independent of any web framework.

`ingest()` authenticates a call, validates its JSON body and hands the
resulting items to the group-commit writer. The ASGI fast path
(tracking/fastpath.py) calls it for every tracking request; it raises
`AppError`s for bad input.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import TypeAdapter, ValidationError

from core.errors import BadRequest, Forbidden, PayloadTooLarge, ValidationFailed
from tracking.items import MAX_EVENT_BYTES, IngestItem, check_event_size, may_nest_deeply, to_item
from tracking.schemas import CALL_TYPES, AliasCall, CallBase, IdentifyCall, PageCall, TrackCall
from tracking.segment import BATCH_PATHS, SHORT_PATHS, SINGLE_CALL_PATHS

if TYPE_CHECKING:
    from tracking.writer import GroupCommitWriter
    from workspaces.service import KeyAuthenticator

MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 1000
_DATETIME = TypeAdapter(datetime)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One tracking endpoint: its call model (None for batch) and body limit."""

    model: type[CallBase] | None
    max_bytes: int


ENDPOINTS: dict[str, Endpoint] = {
    "/track": Endpoint(TrackCall, MAX_EVENT_BYTES),
    "/page": Endpoint(PageCall, MAX_EVENT_BYTES),
    "/identify": Endpoint(IdentifyCall, MAX_EVENT_BYTES),
    "/alias": Endpoint(AliasCall, MAX_EVENT_BYTES),
    "/track/batch": Endpoint(None, MAX_BATCH_BYTES),
    # Segment's HTTP Tracking API.
    **{path: Endpoint(CALL_TYPES[kind], MAX_EVENT_BYTES) for path, kind in SINGLE_CALL_PATHS.items()},
    **{path: Endpoint(None, MAX_BATCH_BYTES) for path in BATCH_PATHS},
}
# ... and the short paths analytics.js posts to (tracking/segment.py).
ENDPOINTS.update({alias: ENDPOINTS[path] for alias, path in SHORT_PATHS.items()})


def key_from_header(authorization: str | None) -> str | None:
    """The API key of `Bearer <key>`, or of Basic auth with the key as user
    name (how Segment libraries send their write key)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            return base64.b64decode(value.strip()).decode().split(":", 1)[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def parse_json(body: bytes) -> Any:
    """The body as JSON; BadRequest when empty or malformed."""
    if not body:
        raise BadRequest("empty body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None


def _validate(model: type[CallBase], data: Any, where: str) -> CallBase:
    if not isinstance(data, dict):
        raise ValidationFailed([{"loc": where, "msg": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in (where, *err["loc"])), "msg": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ValidationFailed(errors) from None


def _sent_at(data: dict[str, Any]) -> datetime | None:
    """The batch's `sentAt` (Segment libraries send one per batch)."""
    raw = data.get("sentAt")
    if raw is None:
        return None
    try:
        return _DATETIME.validate_python(raw)
    except ValidationError:
        raise ValidationFailed([{"loc": "body.sentAt", "msg": "must be an ISO 8601 date-time"}]) from None


def _batch_items(data: Any, workspace_id: Any, received: datetime) -> list[IngestItem]:
    if isinstance(data, dict):
        # `{"batch": [...]}` (Segment) or the seed's `{"events": [...]}`.
        entries = data.get("batch") if "batch" in data else data.get("events")
    else:
        entries = data
    if not isinstance(entries, list):
        raise ValidationFailed([{"loc": "body.batch", "msg": "must be a list of calls"}])
    if len(entries) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"batch has {len(entries)} calls; at most {MAX_BATCH_EVENTS}")
    if not entries:
        raise ValidationFailed([{"loc": "body.batch", "msg": "must not be empty"}])
    shared_context = data.get("context") if isinstance(data, dict) else None
    sent_at = _sent_at(data) if isinstance(data, dict) else None
    # Each entry is measured (size, brackets) on its own, so only entries
    # that could nest deeply are walked; a shared context is measured once.
    deep_context = bool(shared_context) and check_event_size(shared_context, "body.context")
    items: list[IngestItem] = []
    errors: list[dict[str, str]] = []
    for n, entry in enumerate(entries):
        where = f"body.batch.{n}"
        if not isinstance(entry, dict):
            errors.append({"loc": where, "msg": "must be a JSON object"})
            continue
        deep = check_event_size(entry, where)
        kind = entry.get("type", "track")
        model = CALL_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            errors.append({"loc": f"{where}.type", "msg": f"unknown type {kind!r}; use {sorted(CALL_TYPES)}"})
            continue
        call = entry
        if shared_context and "context" not in entry:
            call, deep = {**entry, "context": shared_context}, deep or deep_context
        try:
            items.append(to_item(_validate(model, call, where), workspace_id, received, where, deep, sent_at))
        except ValidationFailed as exc:
            errors.extend(exc.detail)
    if errors:
        raise ValidationFailed(errors[:50])
    return items


async def ingest(
    keys: KeyAuthenticator,
    writer: GroupCommitWriter,
    endpoint: Endpoint,
    authorization: str | None,
    body: bytes,
    client: str | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """Authenticate, validate and store one request; returns the response body.

    The key in the header is checked before the body is parsed; a `writeKey`
    field in the body (browser beacons cannot set headers) is accepted when
    no header key is sent. `client` is the caller's address (for the limit
    on failed key lookups); `origin` is the browser's `Origin` header, which
    must be on the workspace's `allowed_origins` when it has that list.
    """
    raw_key = key_from_header(authorization)
    key = await keys.require(raw_key, "public", client) if raw_key else None
    data = parse_json(body)
    if key is None:
        write_key = data.get("writeKey") if isinstance(data, dict) else None
        key = await keys.require(write_key if isinstance(write_key, str) else None, "public", client)
    if origin is not None and key.allowed_origins and origin not in key.allowed_origins:
        raise Forbidden(f"origin {origin!r} is not in this workspace's allowed_origins")
    received = datetime.now(UTC)
    if endpoint.model is None:
        items = _batch_items(data, key.workspace_id, received)
    else:
        call = _validate(endpoint.model, data, "body")
        items = [to_item(call, key.workspace_id, received, "body", may_nest_deeply(body))]
    result = await writer.write(items)
    return {"success": True, "accepted": result.stored, "duplicates": result.duplicates}
