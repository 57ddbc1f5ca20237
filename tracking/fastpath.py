"""ASGI fast path for the tracking endpoints.

FastAPI's routing, dependency and middleware layers cost more per request
than everything the tracking call itself does, so POSTs to the tracking
paths are answered here, in front of the FastAPI app; every other request
(docs, health, future pixel and webhook routes) passes through to FastAPI.
The FastAPI app still declares these paths, so they appear in /docs.

Browsers post from the storefront's origin: preflights (`OPTIONS`) of the
tracking paths are answered here for any origin (a preflight carries no
key, so no workspace is known yet), and every answer to a tracking POST
that has an `Origin` echoes it, errors included (so the SDK can tell a 4xx,
which it must not retry, from a network failure). A workspace restricts
origins with its `allowed_origins` setting, checked once the key is known
(tracking/ingest.py): a call from another origin gets 403 and stores nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from core.errors import AppError, PayloadTooLarge, as_outage
from core.http import log_outage
from core.request_limits import RequestLimits
from definitions.limits import API_BODY_BYTES, WEBHOOK_BODY_BYTES
from tracking.ingest import ENDPOINTS, ingest
from tracking.segment import METRICS_MAX_BYTES, METRICS_PATHS, decode_body

log = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]
_PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"authorization, content-type, content-encoding, x-retry-count"),
    (b"access-control-max-age", b"86400"),
    (b"content-length", b"0"),
]
_VARY_ORIGIN = (b"vary", b"Origin")
# Lets the SDK read how long a 429 or 503 asks it to wait.
_EXPOSE = (b"access-control-expose-headers", b"Retry-After")


def _cors(origin: bytes | None) -> list[tuple[bytes, bytes]]:
    if origin is None:
        return []
    return [(b"access-control-allow-origin", origin), _VARY_ORIGIN, _EXPOSE]


async def _send_json(
    send: Any,
    status: int,
    payload: Any,
    extra: dict[str, str] | None = None,
    cors: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps(payload)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend((name.lower().encode(), value.encode()) for name, value in extra.items())
    if cors:
        headers.extend(cors)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Any, exc: AppError, cors: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send_json(send, exc.status_code, exc.to_dict(), exc.headers(), cors)


async def _send_preflight(send: Any, origin: bytes | None) -> None:
    headers = [*_PREFLIGHT_HEADERS, *_cors(origin)]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _read_body(scope: dict, receive: Any, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"body is {int(value)} bytes; the limit here is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


class TrackingFastPath:
    """Wraps the FastAPI app; answers tracking POSTs directly."""

    def __init__(self, app: Any) -> None:
        # Every other route gets the URL and body-size hygiene; webhook
        # handlers parse and vet their own JSON.
        self.app = RequestLimits(
            app,
            default_limit=API_BODY_BYTES,
            body_limits={"/webhooks/": WEBHOOK_BODY_BYTES},
            json_prefixes=(),
        )
        # FastAPI's state object, filled by the lifespan.
        self.state = app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        endpoint = ENDPOINTS.get(scope["path"])
        if endpoint is None:
            if scope["path"] in METRICS_PATHS:
                await self._metrics(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        authorization = origin = encoding = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"origin":
                origin = value
            elif name == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        if scope["method"] == "OPTIONS":
            await _send_preflight(send, origin)
            return
        cors = _cors(origin)
        try:
            body = await _read_body(scope, receive, endpoint.max_bytes)
            if encoding is not None:
                body = decode_body(body, encoding, endpoint.max_bytes)
            services = self.state.services
            client = scope.get("client")
            payload = await ingest(
                services.keys,
                services.writer,
                endpoint,
                authorization,
                body,
                client[0] if client else None,
                origin.decode("latin-1") if origin is not None else None,
            )
        except AppError as exc:
            await _send_error(send, exc, cors)
            return
        except Exception as exc:
            # PostgreSQL or Redis unreachable (e.g. re-checking a key whose
            # cache entry expired): 503 + Retry-After; anything else is a bug.
            outage = as_outage(exc)
            if outage is not None:
                log_outage(outage, exc)
                await _send_error(send, outage, cors)
                return
            log.exception("tracking call failed on %s", scope["path"])
            await _send_json(
                send, 500, {"error": "internal", "detail": "unexpected error; it was logged"}, None, cors
            )
            return
        await _send_json(send, 200, payload, None, cors)

    async def _metrics(self, scope: dict, receive: Any, send: Any) -> None:
        """analytics-next's performance counters (`/v1/m`): read and dropped,
        answered like Segment so the library keeps quiet."""
        origin = next((value for name, value in scope["headers"] if name == b"origin"), None)
        if scope["method"] == "OPTIONS":
            await _send_preflight(send, origin)
            return
        try:
            await _read_body(scope, receive, METRICS_MAX_BYTES)
        except AppError as exc:
            await _send_error(send, exc, _cors(origin))
            return
        await _send_json(send, 200, {"success": True}, None, _cors(origin))
