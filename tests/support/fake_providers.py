"""Local stand-ins for email providers that speak their real wire format:
SendGrid v3 `mail/send` and MixMax `/v1/send` over HTTP (scriptable to
answer OK, 429, 500, 400 or hang), SendGrid's Email Activity query
`GET /v3/messages` (answered from what the fake took in), SMTP through
aiosmtpd, and SES through moto in server mode."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

MESSAGE_ARG = "mp_message_id"
# SendGrid's query language, the part the adapter speaks: equality or IN on the custom arg.
ACTIVITY_QUERY = re.compile(
    r"""\(?\s*unique_args\['mp_message_id'\]\s*(?:IN\s*\((?P<values>(?:\s*"[^"]*"\s*,?)+)\)|=\s*(?P<value>"[^"]*"))\s*\)?"""
)


@dataclass
class FakeHTTPProvider:
    """One fake provider. `mode`: ok | slow | 429 | 500 | 400 | hang | accept-then-hang
    (`slow` holds each request `delay` seconds, then accepts it). With
    `fail_after`, the provider goes down (mode 500) once it accepted that many
    messages (a SendGrid request with personalizations counts one per
    personalization; `accepted` counts them). `received` holds the request
    bodies it answered 2xx for (`delivered()`: the messages they carried); `arrived` every request body it
    read in full before holding or answering (a sender killed while a
    request is held still delivered it: `arrived` counts it, `received` not).

    Email Activity (SendGrid): every personalization of a SendGrid request
    that arrived is indexed by its `mp_message_id` custom arg (one request
    may carry many), and `GET /v3/messages` answers SendGrid's query
    `(unique_args['mp_message_id'] IN ("…", …))` (or `= "…"`) from that
    index, as SendGrid does: a summary per message (`msg_id` is the
    request's X-Message-Id, a dot and a per-recipient part; `to_email`;
    `status`), never the custom args. `activity_delay` seconds pass before
    an arrival is listed (SendGrid's index is eventually consistent);
    `activity_mode` (ok | 429 | 500 | 403 | hang) scripts the answer;
    `lookups` holds each query asked."""

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
    activity_mode: str = "ok"
    activity_delay: float = 0.0
    activity: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
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

    async def _answer(self, request: Request, ok: Response, x_message_id: str | None = None) -> Response:
        self.requests += 1
        if not self._authorised(request):
            return JSONResponse({"errors": [{"message": "unauthorized"}]}, status_code=401)
        mode = self.mode
        if mode in ("ok", "slow", "accept-then-hang"):
            body = await request.json()
            self.arrived.append(body)
            if x_message_id is not None:
                self._index(body, x_message_id)
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
        return await self._answer(
            request, Response(status_code=202, headers={"X-Message-Id": message_id}), message_id
        )

    def _index(self, body: dict[str, Any], x_message_id: str) -> None:
        """Email Activity entries of one accepted mail/send request."""
        top = body.get("custom_args") or {}
        now = time.time()
        for n, personalization in enumerate(body.get("personalizations") or []):
            ours = (personalization.get("custom_args") or {}).get(MESSAGE_ARG) or top.get(MESSAGE_ARG)
            if not ours:
                continue
            self.activity.setdefault(ours, []).append(
                {
                    "msg_id": f"{x_message_id}.filterdrecv-fake-{n}-{uuid.uuid4().hex[:8]}.0",
                    "from_email": (body.get("from") or {}).get("email"),
                    "subject": personalization.get("subject") or body.get("subject"),
                    "to_email": personalization["to"][0]["email"],
                    "status": "processed",
                    "opens_count": 0,
                    "clicks_count": 0,
                    "last_event_time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "_at": now,
                }
            )

    async def sendgrid_messages(self, request: Request) -> Response:
        """`GET /v3/messages`: SendGrid's Email Activity query on our custom arg."""
        if not self._authorised(request):
            return JSONResponse({"errors": [{"message": "unauthorized"}]}, status_code=401)
        query = request.query_params.get("query", "")
        self.lookups.append(query)
        if self.activity_mode == "hang":
            return await self._hang()
        if self.activity_mode != "ok":
            status = int(self.activity_mode)
            return JSONResponse({"errors": [{"message": f"scripted {status}"}]}, status_code=status)
        try:
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            limit = 0
        match = ACTIVITY_QUERY.fullmatch(query.strip())
        if not match or not 1 <= limit <= 1000:
            return JSONResponse({"errors": [{"field": "query", "message": "invalid query"}]}, status_code=400)
        wanted = re.findall(r'"([^"]*)"', match.group("values") or match.group("value") or "")
        visible_before = time.time() - self.activity_delay
        found = [
            {k: v for k, v in entry.items() if k != "_at"}
            for value in wanted
            for entry in self.activity.get(value, [])
            if entry["_at"] <= visible_before
        ]
        return JSONResponse({"messages": found[:limit]})

    async def mixmax_send(self, request: Request) -> Response:
        return await self._answer(request, JSONResponse({"_id": uuid.uuid4().hex}))

    def app(self) -> Starlette:
        routes = [
            Route("/v3/mail/send", self.sendgrid_send, methods=["POST"]),
            Route("/v3/messages", self.sendgrid_messages, methods=["GET"]),
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
