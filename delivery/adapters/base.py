"""What every adapter shares: the outgoing email, the error it raises, and
the optional lookup capability (asking the provider which of our messages
it accepted)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any, Protocol, runtime_checkable

import httpx


class ProviderError(Exception):
    """A send that did not go through. `retryable`: the provider (not the
    message) failed — timeout, connection, 429, 5xx, throttling — so the
    router tries the next provider; otherwise the message itself was
    refused (bad address, rejected) and no other provider is tried."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass
class OutgoingEmail:
    """One message, ready for any provider."""

    message_id: uuid.UUID
    to: str
    from_email: str
    subject: str
    html: str
    text: str
    from_name: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def sender(self) -> str:
        """`Name <address>` or the address."""
        return formataddr((self.from_name, self.from_email)) if self.from_name else self.from_email

    @property
    def domain(self) -> str:
        """The sender's domain (for Message-ID)."""
        return self.from_email.rpartition("@")[2] or "localhost"

    def mime(self) -> EmailMessage:
        """multipart/alternative (text, then HTML) with our headers."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = f"<{self.message_id}@{self.domain}>"
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        for name, value in self.headers.items():
            message[name] = value
        message.set_content(self.text)
        message.add_alternative(self.html, subtype="html")
        return message


async def post_json(
    client: httpx.AsyncClient, kind: str, url: str, payload: dict[str, Any] | bytes, *, encoded: bool = False
) -> httpx.Response:
    """POST for the HTTP providers, with their shared failure rules: a
    timeout, a connection error, 401 / 403 (this account), 429 and 5xx
    (the provider) are retryable elsewhere; any other 4xx refuses the
    message itself. Returns the 2xx response. `encoded`: the payload is
    JSON bytes already."""
    try:
        if encoded:
            response = await client.post(url, content=payload, headers=_JSON)
        else:
            response = await client.post(url, json=payload)
    except httpx.TimeoutException as exc:
        raise ProviderError(f"{kind} timed out: {exc!r}", retryable=True) from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"{kind} unreachable: {exc!r}", retryable=True) from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    retryable = status in (401, 403, 429) or status >= 500
    raise ProviderError(f"{kind} {status}: {response.text[:300]}", retryable=retryable)


_JSON = {"Content-Type": "application/json"}


class Adapter(Protocol):
    """Sends one message; returns the provider's message id.

    An adapter may also have `async def send_many(emails) -> list[str |
    ProviderError]`: the provider's batch interface, one result per
    message in order (a message id, or the error that message got). The
    router uses it for batches (campaigns) when there; without it, a
    batch is sent one `send` at a time, several in flight."""

    kind: str

    async def send(self, email: OutgoingEmail) -> str: ...

    async def close(self) -> None: ...


@dataclass
class LookupResult:
    """What a provider said about some of our messages: `found` maps each
    message id it accepted to its own message id; `missing` holds those it
    certainly does not have. An id in neither is undetermined (e.g. the
    answer was cut short) and must be asked again later."""

    found: dict[uuid.UUID, str] = field(default_factory=dict)
    missing: set[uuid.UUID] = field(default_factory=set)


class LookupFailed(Exception):
    """A lookup that got no usable answer. `permanent`: asking again will
    not help (the account lacks the feature or the key its permission)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@runtime_checkable
class ProviderLookup(Protocol):
    """An adapter that can say whether the provider accepted given messages
    (only SendGrid today). `timeout` bounds one provider call, so a caller
    knows how long an attempt may still be calling after its claim."""

    timeout: float

    async def lookup(self, recipients: Mapping[uuid.UUID, str]) -> LookupResult:
        """`recipients`: our message id → its recipient address."""
        ...
