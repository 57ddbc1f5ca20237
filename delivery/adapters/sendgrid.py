"""SendGrid v3 `mail/send`, with the `sendgrid` package's mail helpers
building the payload and httpx sending it (the package's own client is
synchronous). Keeps the `X-Message-Id` SendGrid answers with.

Lookup (reconciliation of interrupted sends): every message carries the
custom arg `mp_message_id`, which SendGrid's Email Activity API can filter
on — `GET /v3/messages?limit=N&query=(unique_args['mp_message_id'] IN
("…","…"))`, URL-encoded. Its answer lists one summary per message it
processed (`msg_id`, `to_email`, `status`, …; not the custom args), so each
summary is matched back by its recipient, within a call whose ids all have
distinct recipients. The API is a paid add-on (the key needs its Email
Activity permission; without it SendGrid answers 400/403, taken as
permanent), is limited to a few requests a minute (429, taken as "ask
again later"), and is eventually consistent: a message it accepted may
not be listed for a while (see docs/architecture.md, "Reconciliation").

`send_many` sends many rendered messages in few requests: one
personalization per message (its own `to`, `subject`, `headers` with the
List-Unsubscribe pair, and `custom_args` with its `mp_message_id`, which
the Event Webhook echoes back), and one body per request whose
per-recipient parts are `substitutions` (see `shared_body`). Limits from
SendGrid's v3 mail/send reference: at most 1,000 personalizations (and
recipients) a request, each address once a request, substitutions at most
10,000 bytes a personalization (the reference's figure; the substitution
tags guide says 50,000 — the lower one is kept). Messages that do not fit
one body, or whose substitutions would be larger, go as another group or
one request each, through `send`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from sendgrid.helpers.mail import (
    ClickTracking,
    CustomArg,
    From,
    Header,
    Mail,
    OpenTracking,
    ReplyTo,
    To,
    TrackingSettings,
)

from delivery.adapters.base import LookupFailed, LookupResult, OutgoingEmail, ProviderError, post_json
from delivery.adapters.shared_body import share
from delivery.destinations import provider_http_client

DEFAULT_BASE_URL = "https://api.sendgrid.com"
# The custom arg naming our message (the webhooks read it too).
MESSAGE_ARG = "mp_message_id"
# Ids per Email Activity query: about 45 URL-encoded characters each keeps
# the request line near 5 KB, under common 8 KB limits.
LOOKUP_IDS_PER_CALL = 100
# The API's largest page; an answer this long may be cut short.
LOOKUP_LIMIT = 1000
MAX_PERSONALIZATIONS = 1000
"""Personalizations (and recipients) SendGrid takes in one request."""
SUBSTITUTION_BYTES = 10_000
"""Substitutions one personalization may carry."""
# A round of fitting that takes fewer than 1/_FEW of its messages ends the
# fitting: the rest go one request each.
_FEW = 10
# Opens and clicks are tracked by the platform's own pixel and links.
_NO_TRACKING = {
    "click_tracking": {"enable": False, "enable_text": False},
    "open_tracking": {"enable": False},
}


class SendGridAdapter:
    """Settings: `base_url` (optional), `timeout` (seconds). Secrets: `api_key`."""

    kind = "sendgrid"
    batch_size = MAX_PERSONALIZATIONS

    def __init__(
        self, settings: dict[str, Any], secrets: dict[str, Any], *, allow_private_hosts: bool = False
    ) -> None:
        base = settings.get("base_url", DEFAULT_BASE_URL).rstrip("/")
        self._url = base + "/v3/mail/send"
        self._activity_url = base + "/v3/messages"
        self.timeout = float(settings.get("timeout", 10))
        self._client = provider_http_client(
            self.timeout,
            {"Authorization": f"Bearer {secrets.get('api_key', '')}"},
            allow_private_hosts,
        )

    @staticmethod
    def payload(email: OutgoingEmail) -> dict[str, Any]:
        """The v3 JSON body."""
        mail = Mail(
            from_email=From(email.from_email, email.from_name),
            to_emails=To(email.to),
            subject=email.subject,
            plain_text_content=email.text,
            html_content=email.html,
        )
        if email.reply_to:
            mail.reply_to = ReplyTo(email.reply_to)
        for name, value in email.headers.items():
            mail.header = Header(name, value)
        mail.custom_arg = CustomArg(MESSAGE_ARG, str(email.message_id))
        # Opens and clicks are tracked by the platform's own pixel and links.
        tracking = TrackingSettings()
        tracking.click_tracking = ClickTracking(False, False)
        tracking.open_tracking = OpenTracking(False)
        mail.tracking_settings = tracking
        return mail.get()

    async def send(self, email: OutgoingEmail) -> str:
        response = await post_json(self._client, self.kind, self._url, self.payload(email))
        return response.headers.get("X-Message-Id") or str(email.message_id)

    async def lookup(self, recipients: Mapping[uuid.UUID, str]) -> LookupResult:
        """Which of these messages SendGrid processed (Email Activity API),
        by our `mp_message_id`, whichever request carried them: one call per
        `LOOKUP_IDS_PER_CALL` ids (more only when two share a recipient)."""
        result = LookupResult()
        for call in _calls(recipients):
            ids = ",".join(f'"{message_id}"' for message_id in call)
            query = f"(unique_args['{MESSAGE_ARG}'] IN ({ids}))"
            summaries = await self._activity(
                f"{self._activity_url}?limit={LOOKUP_LIMIT}&query={quote(query, safe='')}"
            )
            by_address = {address.casefold(): message_id for message_id, address in call.items()}
            for summary in summaries:
                message_id = by_address.get(str(summary.get("to_email") or "").casefold())
                if message_id is not None and summary.get("msg_id"):
                    # msg_id is the request's X-Message-Id, a dot, then SendGrid's
                    # per-recipient part: keep what a send records.
                    result.found[message_id] = str(summary["msg_id"]).split(".")[0]
            if len(summaries) < LOOKUP_LIMIT:
                result.missing.update(message_id for message_id in call if message_id not in result.found)
        return result

    async def _activity(self, url: str) -> list[dict[str, Any]]:
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise LookupFailed(f"{self.kind} lookup unreachable: {exc!r}", permanent=False) from None
        status = response.status_code
        if status != 200:
            # 429 (a few requests a minute) and 5xx pass; 400 / 401 / 403
            # (no Email Activity add-on or permission) will not.
            permanent = status < 500 and status not in (408, 429)
            raise LookupFailed(f"{self.kind} lookup {status}: {response.text[:300]}", permanent=permanent)
        try:
            messages = response.json()["messages"]
        except (ValueError, KeyError, TypeError):
            raise LookupFailed(
                f"{self.kind} lookup answered {response.text[:300]!r}", permanent=False
            ) from None
        if not isinstance(messages, list):
            raise LookupFailed(f"{self.kind} lookup answered {response.text[:300]!r}", permanent=False)
        return [m for m in messages if isinstance(m, dict)]

    async def send_many(self, emails: list[OutgoingEmail]) -> list[str | ProviderError]:
        """Each message's SendGrid message id or the ProviderError it got,
        in order. A request that fails retryably fails each of its
        messages; one refused (a 4xx other than 401/403/429) is sent again
        one message a request, so one bad address refuses only itself."""
        batches, singles = await asyncio.to_thread(self.plan, emails)
        results: list[str | ProviderError] = [ProviderError("not sent", retryable=True)] * len(emails)

        async def post(payload: bytes, indexes: list[int]) -> None:
            try:
                response = await post_json(self._client, self.kind, self._url, payload, encoded=True)
            except ProviderError as exc:
                if exc.retryable:
                    for i in indexes:
                        results[i] = exc
                    return
                # Refused as a whole (one bad address refuses the request):
                # one request each, so each message gets its own answer.
                await asyncio.gather(*(one(i) for i in indexes))
                return
            # One id per request: the Event Webhook's sg_message_id is it
            # plus a per-recipient suffix; `mp_message_id` tells them apart.
            request_id = response.headers.get("X-Message-Id")
            for i in indexes:
                results[i] = request_id or str(emails[i].message_id)

        async def one(i: int) -> None:
            try:
                results[i] = await self.send(emails[i])
            except ProviderError as exc:
                results[i] = exc

        await asyncio.gather(*(post(p, ix) for p, ix in batches), *(one(i) for i in singles))
        return results

    @classmethod
    def plan(cls, emails: list[OutgoingEmail]) -> tuple[list[tuple[bytes, list[int]]], list[int]]:
        """(payload, indexes of its messages) per personalizations request,
        and the indexes of the messages to send one at a time."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, email in enumerate(emails):
            groups[(email.from_email, email.from_name, email.reply_to, bool(email.text))].append(i)
        batches: list[tuple[bytes, list[int]]] = []
        singles: list[int] = []
        for indexes in groups.values():
            left = indexes
            while len(left) >= 2:
                chunk, later = _unique_addresses(emails, left)
                fitted = cls._fit(emails, chunk) if len(chunk) >= 2 else None
                if fitted is None:
                    break
                payload, sent = fitted
                batches.append((payload, sent))
                taken = set(sent)
                left = [i for i in chunk if i not in taken] + later
                if len(sent) * _FEW < len(chunk):
                    break  # the rest hardly share a body: one request each
            singles.extend(left)
        return batches, singles

    @staticmethod
    def _fit(emails: list[OutgoingEmail], indexes: list[int]) -> tuple[bytes, list[int]] | None:
        """One request for the messages of `indexes` that fit one body
        (None when fewer than two do)."""
        chosen = [emails[i] for i in indexes]
        with_text = bool(chosen[0].text)
        parts = [(e.html, e.text) if with_text else (e.html,) for e in chosen]
        forbidden = [e.subject for e in chosen] + [v for e in chosen for v in e.headers.values()]
        first = chosen[0]
        forbidden += [first.from_name or "", first.reply_to or ""]
        bodies, kept = share(parts, SUBSTITUTION_BYTES, forbidden)
        if len(kept) < 2:
            return None
        personalizations = []
        for j, k in enumerate(kept):
            email = chosen[k]
            substitutions: dict[str, str] = {}
            for body in bodies:
                substitutions.update(body.values[j])
            item: dict[str, Any] = {
                "to": [{"email": email.to}],
                "subject": email.subject,
                "custom_args": {"mp_message_id": str(email.message_id)},
            }
            if email.headers:
                item["headers"] = email.headers
            if substitutions:
                item["substitutions"] = substitutions
            personalizations.append(item)
        sender: dict[str, Any] = {"email": first.from_email}
        if first.from_name:
            sender["name"] = first.from_name
        content = [{"type": "text/html", "value": bodies[0].template}]
        if with_text:
            content.insert(0, {"type": "text/plain", "value": bodies[1].template})
        payload: dict[str, Any] = {
            "personalizations": personalizations,
            "from": sender,
            "content": content,
            "tracking_settings": _NO_TRACKING,
        }
        if first.reply_to:
            payload["reply_to"] = {"email": first.reply_to}
        return orjson.dumps(payload), [indexes[k] for k in kept]

    async def close(self) -> None:
        await self._client.aclose()


def _calls(recipients: Mapping[uuid.UUID, str]) -> list[dict[uuid.UUID, str]]:
    """The ids split into calls of at most LOOKUP_IDS_PER_CALL whose
    recipients differ (a summary names its recipient, not our id)."""
    calls: list[tuple[dict[uuid.UUID, str], set[str]]] = []
    for message_id, address in recipients.items():
        key = address.casefold()
        for ids, addresses in calls:
            if len(ids) < LOOKUP_IDS_PER_CALL and key not in addresses:
                ids[message_id] = address
                addresses.add(key)
                break
        else:
            calls.append(({message_id: address}, {key}))
    return [ids for ids, _ in calls]


def _unique_addresses(emails: list[OutgoingEmail], indexes: list[int]) -> tuple[list[int], list[int]]:
    """Up to MAX_PERSONALIZATIONS messages, no address twice (SendGrid
    refuses a request naming one twice), and the rest."""
    seen: set[str] = set()
    chunk: list[int] = []
    later: list[int] = []
    for i in indexes:
        address = emails[i].to.lower()
        if address in seen or len(chunk) >= MAX_PERSONALIZATIONS:
            later.append(i)
        else:
            seen.add(address)
            chunk.append(i)
    return chunk, later
