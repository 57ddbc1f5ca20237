"""SendGrid v3 `mail/send`, with the `sendgrid` package's mail helpers
building the payload and httpx sending it (the package's own client is
synchronous). Keeps the `X-Message-Id` SendGrid answers with."""

from __future__ import annotations

from typing import Any

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

from delivery.adapters.base import OutgoingEmail, post_json
from delivery.destinations import provider_http_client

DEFAULT_BASE_URL = "https://api.sendgrid.com"


class SendGridAdapter:
    """Settings: `base_url` (optional), `timeout` (seconds). Secrets: `api_key`."""

    kind = "sendgrid"

    def __init__(
        self, settings: dict[str, Any], secrets: dict[str, Any], *, allow_private_hosts: bool = False
    ) -> None:
        self._url = settings.get("base_url", DEFAULT_BASE_URL).rstrip("/") + "/v3/mail/send"
        self._client = provider_http_client(
            float(settings.get("timeout", 10)),
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
        mail.custom_arg = CustomArg("mp_message_id", str(email.message_id))
        # Opens and clicks are tracked by the platform's own pixel and links.
        tracking = TrackingSettings()
        tracking.click_tracking = ClickTracking(False, False)
        tracking.open_tracking = OpenTracking(False)
        mail.tracking_settings = tracking
        return mail.get()

    async def send(self, email: OutgoingEmail) -> str:
        response = await post_json(self._client, self.kind, self._url, self.payload(email))
        return response.headers.get("X-Message-Id") or str(email.message_id)

    async def close(self) -> None:
        await self._client.aclose()
