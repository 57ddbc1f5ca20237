"""Tracking endpoints: `/identify`, `/track`, `/track/batch`, `/page`, `/alias`.

Handlers take the raw request (no FastAPI body models) because this is the
hot path: they read the body once, validate with pydantic, and hand items
to the group-commit writer.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError

from core.http import JSONResponse
from core.errors import BadRequest, PayloadTooLarge, ValidationFailed
from tracking.items import MAX_EVENT_BYTES, IngestItem, check_event_size, to_item
from tracking.schemas import CALL_TYPES, AliasCall, CallBase, IdentifyCall, PageCall, TrackCall, WriteResponse
from workspaces.repository import KeyRow

MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 1000

router = APIRouter()


def _header_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return value.strip()
        if scheme == "basic":
            # Segment libraries send the write key as the Basic username.
            try:
                return base64.b64decode(value.strip()).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                return None
    return None


async def _authenticate_and_read(request: Request, limit: int) -> tuple[KeyRow, Any]:
    """Check the key (header first, so a bad key never costs a body read),
    then read the JSON body; a `writeKey` in the body (browser beacons
    cannot set headers) is accepted when no header is sent."""
    keys = request.app.state.services.keys
    raw = _header_key(request)
    if raw:
        key = await keys.require(raw, "public")
        return key, await _read_json(request, limit)
    data = await _read_json(request, limit)
    write_key = data.get("writeKey") if isinstance(data, dict) else None
    key = await keys.require(write_key if isinstance(write_key, str) else None, "public")
    return key, data


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit here is {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body is over {limit} bytes")
    if not body:
        raise BadRequest("empty body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None


def _errors(exc: ValidationError, prefix: str) -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]))
        out.append({"loc": loc, "msg": err["msg"]})
    return out


def _validate(model: type[CallBase], data: Any, where: str) -> CallBase:
    if not isinstance(data, dict):
        raise ValidationFailed([{"loc": where, "msg": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(_errors(exc, where)) from None


async def _single(request: Request, model: type[CallBase]) -> JSONResponse:
    key, data = await _authenticate_and_read(request, MAX_EVENT_BYTES)
    call = _validate(model, data, "body")
    item = to_item(call, key.workspace_id, datetime.now(UTC))
    result = await request.app.state.services.writer.write([item])
    return JSONResponse({"success": True, "accepted": result.stored, "duplicates": result.duplicates})


@router.post("/track", response_model=WriteResponse, summary="Record an event")
async def track(request: Request) -> JSONResponse:
    """One event: `{"userId"|"anonymousId"|"email", "event", "properties", "timestamp", "messageId"}`."""
    return await _single(request, TrackCall)


@router.post("/page", response_model=WriteResponse, summary="Record a page view")
async def page(request: Request) -> JSONResponse:
    """A page view, stored as the event `Page Viewed` with `name` and `properties`."""
    return await _single(request, PageCall)


@router.post("/identify", response_model=WriteResponse, summary="Identify a person")
async def identify(request: Request) -> JSONResponse:
    """Attach traits; with `userId` and `anonymousId`, merges the anonymous profile."""
    return await _single(request, IdentifyCall)


@router.post("/alias", response_model=WriteResponse, summary="Link a previous id to a user id")
async def alias(request: Request) -> JSONResponse:
    """`previousId` (anonymous or former user id) becomes the same person as `userId`."""
    return await _single(request, AliasCall)


@router.post("/track/batch", response_model=WriteResponse, summary="Record up to 1,000 calls")
async def batch(request: Request) -> JSONResponse:
    """`{"batch": [{"type": "track"|"identify"|"page"|"alias", ...}, ...]}`; all or nothing."""
    key, data = await _authenticate_and_read(request, MAX_BATCH_BYTES)
    entries = data.get("batch") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValidationFailed([{"loc": "body.batch", "msg": "must be a list of calls"}])
    if len(entries) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"batch has {len(entries)} calls; at most {MAX_BATCH_EVENTS}")
    if not entries:
        raise ValidationFailed([{"loc": "body.batch", "msg": "must not be empty"}])
    received = datetime.now(UTC)
    shared_context = data.get("context") if isinstance(data, dict) else None
    items: list[IngestItem] = []
    errors: list[dict[str, str]] = []
    for n, entry in enumerate(entries):
        where = f"body.batch.{n}"
        if not isinstance(entry, dict):
            errors.append({"loc": where, "msg": "must be a JSON object"})
            continue
        check_event_size(entry, where)
        kind = entry.get("type", "track")
        model = CALL_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            errors.append({"loc": f"{where}.type", "msg": f"unknown type {kind!r}; use {sorted(CALL_TYPES)}"})
            continue
        if shared_context and "context" not in entry:
            entry = {**entry, "context": shared_context}
        try:
            items.append(to_item(_validate(model, entry, where), key.workspace_id, received, where))
        except ValidationFailed as exc:
            errors.extend(exc.detail)
    if errors:
        raise ValidationFailed(errors[:50])
    result = await request.app.state.services.writer.write(items)
    return JSONResponse({"success": True, "accepted": result.stored, "duplicates": result.duplicates})

