"""MixMax's send API (`POST /v1/send` with `X-API-Token`).

MixMax sends from a user's own mailbox, at mailbox volumes, and takes no
custom headers (so no `List-Unsubscribe`): give it the lowest priority, as
a last resort, and keep an unsubscribe link in templates' bodies.

No lookup (ProviderLookup): MixMax has no API that finds a message by an
id of ours, so a send interrupted mid-call with MixMax enabled ends
`unknown` (delivery/reconcile.py)."""

from __future__ import annotations

from typing import Any

from delivery.adapters.base import OutgoingEmail, post_json
from delivery.destinations import provider_http_client

DEFAULT_BASE_URL = "https://api.mixmax.com"


class MixmaxAdapter:
    """Settings: `base_url` (optional), `timeout`. Secrets: `api_token`."""

    kind = "mixmax"

    def __init__(
        self, settings: dict[str, Any], secrets: dict[str, Any], *, allow_private_hosts: bool = False
    ) -> None:
        self._url = settings.get("base_url", DEFAULT_BASE_URL).rstrip("/") + "/v1/send"
        self._client = provider_http_client(
            float(settings.get("timeout", 15)),
            {"X-API-Token": str(secrets.get("api_token", ""))},
            allow_private_hosts,
        )

    @staticmethod
    def payload(email: OutgoingEmail) -> dict[str, Any]:
        """The JSON body MixMax's send endpoint takes."""
        return {
            "to": [{"name": "", "address": email.to}],
            "from": email.sender,
            "subject": email.subject,
            "html": email.html,
        }

    async def send(self, email: OutgoingEmail) -> str:
        response = await post_json(self._client, self.kind, self._url, self.payload(email))
        try:
            body = response.json()
        except ValueError:
            body = {}
        return str(body.get("_id") or body.get("id") or email.message_id)

    async def close(self) -> None:
        await self._client.aclose()
