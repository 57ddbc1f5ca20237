"""Local stand-ins for email providers that speak their real wire format:
SendGrid v3 `mail/send` and MixMax `/v1/send` over HTTP (scriptable to
answer OK, 429, 500, 400 or hang), SMTP through aiosmtpd, and SES through
moto in server mode."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass
class FakeHTTPProvider:
    """One fake provider. `mode`: ok | slow | 429 | 500 | 400 | hang | accept-then-hang
    (`slow` holds each request `delay` seconds, then accepts it). With
    `fail_after`, the provider goes down (mode 500) once it accepted that many.
    `received` holds what it answered 2xx for; `arrived` every request body it
    read in full before holding or answering (a sender killed while a
    request is held still delivered it: `arrived` counts it, `received` not)."""

    token: str = "secret-token"
    mode: str = "ok"
    delay: float = 2.0
    received: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    arrived: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    extra_routes: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""
    fail_after: int | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Let hanging requests finish (so the server can shut down)."""
        self._released.set()

    async def _hang(self) -> Response:
        await self._released.wait()
        return JSONResponse({"errors": [{"message": "released"}]}, status_code=503)

    def _authorised(self, request: Request) -> bool:
        return (
            request.headers.get("authorization") == f"Bearer {self.token}"
            or request.headers.get("x-api-token") == self.token
        )

    async def _answer(self, request: Request, ok: Response) -> Response:
        self.requests += 1
        if not self._authorised(request):
            return JSONResponse({"errors": [{"message": "unauthorized"}]}, status_code=401)
        mode = self.mode
        if mode in ("ok", "slow", "accept-then-hang"):
            self.arrived.append(await request.json())
        if mode == "hang":
            return await self._hang()
        if mode == "slow":
            await asyncio.sleep(self.delay)
        if mode in ("ok", "slow", "accept-then-hang"):
            self.received.append(await request.json())
            self.received_at.append(time.monotonic())
            if self.fail_after is not None and len(self.received) >= self.fail_after:
                self.mode = "500"
            if mode == "accept-then-hang":
                return await self._hang()
            return ok
        status = int(mode)
        return JSONResponse({"errors": [{"message": f"scripted {status}"}]}, status_code=status)

    async def sendgrid_send(self, request: Request) -> Response:
        message_id = uuid.uuid4().hex[:22]
        return await self._answer(request, Response(status_code=202, headers={"X-Message-Id": message_id}))

    async def mixmax_send(self, request: Request) -> Response:
        return await self._answer(request, JSONResponse({"_id": uuid.uuid4().hex}))

    def app(self) -> Starlette:
        routes = [
            Route("/v3/mail/send", self.sendgrid_send, methods=["POST"]),
            Route("/v1/send", self.mixmax_send, methods=["POST"]),
        ]
        for path, handler in self.extra_routes.items():
            routes.append(Route(path, handler, methods=["GET", "POST"]))
        return Starlette(routes=routes)


def text_route(body: str, content_type: str = "text/plain"):
    """A GET handler answering a fixed body (e.g. a certificate)."""

    async def handler(request: Request) -> Response:
        return PlainTextResponse(body, media_type=content_type)

    return handler


@dataclass
class SMTPRecorder:
    """aiosmtpd handler: records messages, or refuses with `reject` (e.g. '550 ...')."""

    messages: list[Any] = field(default_factory=list)
    reject: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        if self.reject:
            return self.reject
        self.messages.append(envelope)
        return "250 Message accepted for delivery"
