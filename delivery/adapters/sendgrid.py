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
not be listed for a while (see docs/architecture.md, "Reconciliation")."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
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

from delivery.adapters.base import LookupFailed, LookupResult, OutgoingEmail, post_json
from delivery.destinations import provider_http_client

DEFAULT_BASE_URL = "https://api.sendgrid.com"
# The custom arg naming our message (the webhooks read it too).
MESSAGE_ARG = "mp_message_id"
# Ids per Email Activity query: about 45 URL-encoded characters each keeps
# the request line near 5 KB, under common 8 KB limits.
LOOKUP_IDS_PER_CALL = 100
# The API's largest page; an answer this long may be cut short.
LOOKUP_LIMIT = 1000


class SendGridAdapter:
    """Settings: `base_url` (optional), `timeout` (seconds). Secrets: `api_key`."""

    kind = "sendgrid"

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
