"""Request hygiene in front of an HTTP app (pure ASGI middleware).

Before a request reaches FastAPI: its URL must be valid UTF-8 without NUL
(PostgreSQL text cannot hold U+0000), its body must fit the limit of its
endpoint family (checked from Content-Length, then by counting streamed
bytes, so an oversized body is never held in memory), and a JSON body must
be storable: nested at most MAX_BODY_DEPTH levels, no NUL or lone
surrogate in any string or key, no integer past 64 bits, no non-finite
number (see definitions/limits.py). Failures are answered here as
`{"error", "detail"}` with 400, 413 or 422.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from definitions.limits import MAX_BODY_DEPTH, Unstorable, check_json

_JSON_HEADERS = [(b"content-type", b"application/json")]
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class _Refused(Exception):
    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.body = orjson.dumps({"error": error, "detail": detail})


def _url_problem(scope: dict) -> str | None:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    for part in (raw_path, scope.get("query_string", b"")):
        decoded = unquote_to_bytes(part.replace(b"+", b" "))
        if b"\x00" in decoded:
            return "the URL must not contain NUL characters (%00)"
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            return "the URL must be valid UTF-8 once percent-decoded"
    return None


def _is_json(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    # FastAPI reads a body without a content type as JSON too.
    return True


def check_json_body(body: bytes) -> None:
    """Raise `_Refused` unless `body` is JSON the platform can store."""
    try:
        # The stdlib parser, as FastAPI uses: it keeps big integers and lone
        # surrogates as they are, so the walk below sees what FastAPI will.
        data = json.loads(body)
    except RecursionError:
        raise _Refused(
            400, "bad_request", f"invalid JSON: nested deeper than {MAX_BODY_DEPTH} levels"
        ) from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise _Refused(400, "bad_request", f"invalid JSON: {exc}") from None
    try:
        check_json(data, MAX_BODY_DEPTH)
    except Unstorable as exc:
        raise _Refused(422, "validation_error", [{"loc": exc.where("body"), "msg": exc.msg}]) from None


class RequestLimits:
    """Wraps an ASGI app; `body_limits` maps path prefixes to byte limits
    (the longest matching prefix wins, `default_limit` otherwise).
    `json_prefixes` are the paths whose JSON bodies are checked here."""

    def __init__(
        self,
        app: Any,
        *,
        default_limit: int,
        body_limits: dict[str, int] | None = None,
        json_prefixes: Sequence[str] = ("/",),
    ) -> None:
        self.app = app
        self._limits = sorted((body_limits or {}).items(), key=lambda kv: -len(kv[0]))
        self._default = default_limit
        self._json_prefixes = tuple(json_prefixes)

    def __getattr__(self, name: str) -> Any:
        # Expose the wrapped app's attributes (FastAPI's `state`, `openapi`).
        return getattr(self.app, name)

    def limit_for(self, path: str) -> int:
        """The body limit of `path`'s endpoint family."""
        for prefix, limit in self._limits:
            if path.startswith(prefix):
                return limit
        return self._default

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            problem = _url_problem(scope)
            if problem is not None:
                raise _Refused(400, "bad_request", problem)
            if scope["method"] not in _BODY_METHODS:
                await self.app(scope, receive, send)
                return
            body = await self._read_body(scope, receive)
            if body and scope["path"].startswith(self._json_prefixes) and _is_json(scope):
                check_json_body(body)
        except _Refused as refused:
            await _send(send, refused.status, refused.body)
            return
        if body is None:  # the client went away
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _Refused(
                    413, "payload_too_large", f"body is {int(value)} bytes; the limit here is {limit} bytes"
                )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _Refused(413, "payload_too_large", f"body is over {limit} bytes, the limit here")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
