"""ASGI fast path for the tracking endpoints.

FastAPI's routing, dependency and middleware layers cost more per request
than everything the tracking call itself does, so POSTs to the tracking
paths are answered here, in front of the FastAPI app; every other request
(docs, health, future pixel and webhook routes) passes through to FastAPI.
The FastAPI app still declares these paths, so they appear in /docs.
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

log = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _send_json(send: Any, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
    body = orjson.dumps(payload)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend((name.lower().encode(), value.encode()) for name, value in extra.items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Any, exc: AppError) -> None:
    await _send_json(send, exc.status_code, exc.to_dict(), exc.headers())


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
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        endpoint = ENDPOINTS.get(scope["path"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            body = await _read_body(scope, receive, endpoint.max_bytes)
            services = self.state.services
            client = scope.get("client")
            payload = await ingest(
                services.keys, services.writer, endpoint, authorization, body, client[0] if client else None
            )
        except AppError as exc:
            await _send_error(send, exc)
            return
        except Exception as exc:
            # PostgreSQL or Redis unreachable (e.g. re-checking a key whose
            # cache entry expired): 503 + Retry-After; anything else is a bug.
            outage = as_outage(exc)
            if outage is not None:
                log_outage(outage, exc)
                await _send_error(send, outage)
                return
            log.exception("tracking call failed on %s", scope["path"])
            await _send_json(send, 500, {"error": "internal", "detail": "unexpected error; it was logged"})
            return
        await _send_json(send, 200, payload)
