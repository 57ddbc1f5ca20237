"""FastAPI declarations of the tracking endpoints.

Requests to these paths are answered by the ASGI fast path in front of
FastAPI (tracking/fastpath.py); these routes give them their OpenAPI
documentation and serve them if the app is mounted without the fast path.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tracking.ingest import ENDPOINTS, Endpoint, ingest
from tracking.schemas import CALL_TYPES, AliasCall, CallBase, IdentifyCall, PageCall, TrackCall, WriteResponse
from tracking.segment import BATCH_PATHS, SHORT_PATHS, SINGLE_CALL_PATHS, decode_body

router = APIRouter()


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _model_body(model: type[CallBase]) -> dict[str, Any]:
    return _body_schema(model.model_json_schema(by_alias=True))


_BATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "batch": {
            "type": "array",
            "maxItems": 1000,
            "description": (
                "Calls with `type` track (default), identify, page, alias, screen or group; all or nothing."
            ),
            "items": {"type": "object"},
        },
        "events": {
            "type": "array",
            "maxItems": 1000,
            "description": 'The same as `batch` (the seed\'s form: `[{"email": …, "name": …}]`).',
            "items": {"type": "object"},
        },
        "context": {"type": "object", "description": "Context applied to calls that have none."},
        "sentAt": {
            "type": "string",
            "format": "date-time",
            "description": "When the client sent the batch: corrects browser calls' clock skew.",
        },
    },
}


async def _handle(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    services = request.app.state.services
    body = decode_body(
        await request.body(), request.headers.get("content-encoding", "").strip().lower(), endpoint.max_bytes
    )
    client = request.client.host if request.client else None
    return await ingest(
        services.keys,
        services.writer,
        endpoint,
        request.headers.get("authorization"),
        body,
        client,
        request.headers.get("origin"),
    )


@router.post(
    "/track", response_model=WriteResponse, summary="Record an event", openapi_extra=_model_body(TrackCall)
)
async def track(request: Request) -> dict[str, Any]:
    """One event: identity (`userId`, `anonymousId` or `email`), `event` (or
    `name`), `properties`, optional `timestamp` and `messageId`. Up to 32 KB."""
    return await _handle(request, ENDPOINTS["/track"])


@router.post(
    "/page", response_model=WriteResponse, summary="Record a page view", openapi_extra=_model_body(PageCall)
)
async def page(request: Request) -> dict[str, Any]:
    """A page view, stored as the event `Page Viewed` with `name` and `properties`."""
    return await _handle(request, ENDPOINTS["/page"])


@router.post(
    "/identify",
    response_model=WriteResponse,
    summary="Identify a person",
    openapi_extra=_model_body(IdentifyCall),
)
async def identify(request: Request) -> dict[str, Any]:
    """Merge `traits` into the profile. With `userId` and `anonymousId`, the
    anonymous profile and its events join the known one."""
    return await _handle(request, ENDPOINTS["/identify"])


@router.post(
    "/alias",
    response_model=WriteResponse,
    summary="Link a previous id to a user id",
    openapi_extra=_model_body(AliasCall),
)
async def alias(request: Request) -> dict[str, Any]:
    """`previousId` (an anonymous id or a former user id) is the same person as `userId`."""
    return await _handle(request, ENDPOINTS["/alias"])


@router.post(
    "/track/batch",
    response_model=WriteResponse,
    summary="Record up to 1,000 calls",
    openapi_extra=_body_schema(_BATCH_SCHEMA),
)
async def batch(request: Request) -> dict[str, Any]:
    """`{"batch": [...]}` (or `{"events": [...]}`) of up to 1,000 calls and
    500 KB; one invalid call rejects the whole request, so nothing of it is
    stored. A `sentAt` corrects browser calls' timestamps for clock skew."""
    return await _handle(request, ENDPOINTS["/track/batch"])


def _segment_route(
    path: str, endpoint: Endpoint, summary: str, doc: str, schema: dict[str, Any], documented: bool = True
) -> None:
    async def route(request: Request) -> dict[str, Any]:
        return await _handle(request, endpoint)

    route.__doc__ = doc
    router.add_api_route(
        path,
        route,
        methods=["POST"],
        response_model=WriteResponse,
        summary=summary,
        tags=["Segment-compatible"],
        openapi_extra=_body_schema(schema),
        name=f"segment {path}",
        include_in_schema=documented,
    )


_SEGMENT_DOCS: dict[str, tuple[str, str, dict[str, Any]]] = {
    **{
        path: (
            f"Segment {kind}",
            f"Segment's `{kind}` call (Basic auth with the write key as user name, or `writeKey` "
            "in the body; `Content-Encoding: gzip` accepted).",
            CALL_TYPES[kind].model_json_schema(by_alias=True),
        )
        for path, kind in SINGLE_CALL_PATHS.items()
    },
    **{
        path: (
            "Segment batch",
            'Segment\'s batch: `{"batch": [...], "sentAt": ...}` of calls of any `type`, all or '
            "nothing, up to 1,000 calls and 500 KB (gzip accepted).",
            _BATCH_SCHEMA,
        )
        for path in BATCH_PATHS
    },
}
for _path, (_summary, _doc, _schema) in _SEGMENT_DOCS.items():
    _segment_route(_path, ENDPOINTS[_path], _summary, _doc, _schema)
# analytics.js's short paths: served like the path each names, documented there.
for _alias, _path in SHORT_PATHS.items():
    _summary, _doc, _schema = _SEGMENT_DOCS[_path]
    _segment_route(_alias, ENDPOINTS[_alias], _summary, _doc, _schema, documented=False)
