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
    `fail_after`, the provider goes down (mode 500) once it accepted that many
    messages (a SendGrid request with personalizations counts one per
    personalization; `accepted` counts them). `received` holds the request
    bodies it answered 2xx for (`delivered()`: the messages they carried); `arrived` every request body it
    read in full before holding or answering (a sender killed while a
    request is held still delivered it: `arrived` counts it, `received` not)."""

    token: str = "secret-token"
    mode: str = "ok"
    delay: float = 2.0
    received: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    arrived: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    accepted: int = 0
    extra_routes: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""
    fail_after: int | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def delivered(self, *, arrived: bool = False) -> list[dict[str, Any]]:
        """One message per SendGrid personalization (or MixMax request) it
        answered 2xx for (with `arrived`: that reached it), as the
        recipient would get it: `to`, `subject`, `html`, `text`, `headers`,
        `custom_args`, substitutions applied."""
        return [m for body in (self.arrived if arrived else self.received) for m in expand(body)]

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
            body = await request.json()
            self.received.append(body)
            self.received_at.append(time.monotonic())
            self.accepted += len(expand(body))
            if self.fail_after is not None and self.accepted >= self.fail_after:
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


def expand(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages one request body stands for: each SendGrid
    personalization with its substitutions applied to the subject and
    content (as SendGrid does), or the MixMax message."""
    if not isinstance(body.get("personalizations"), list):
        to = body.get("to") if isinstance(body.get("to"), list) and body.get("to") else [{}]
        address = to[0].get("address") if isinstance(to[0], dict) else None
        return [{"to": address, "subject": body.get("subject"), "html": body.get("html")}]
    content = {part["type"]: part["value"] for part in body.get("content", [])}
    messages = []
    for item in body["personalizations"]:
        substitutions = item.get("substitutions") or {}

        def filled(value: str | None, substitutions: dict[str, str] = substitutions) -> str | None:
            if value is None:
                return None
            for key, replacement in substitutions.items():
                value = value.replace(key, replacement)
            return value

        for to in item["to"]:
            messages.append(
                {
                    "to": to["email"],
                    "subject": filled(item.get("subject", body.get("subject"))),
                    "html": filled(content.get("text/html")),
                    "text": filled(content.get("text/plain")),
                    "headers": {**body.get("headers", {}), **item.get("headers", {})},
                    "custom_args": {**body.get("custom_args", {}), **item.get("custom_args", {})},
                }
            )
    return messages


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
