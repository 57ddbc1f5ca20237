"""MixMax's send API (`POST /v1/send` with `X-API-Token`).

MixMax sends from a user's own mailbox, at mailbox volumes, and takes no
custom headers (so no `List-Unsubscribe`): give it the lowest priority, as
a last resort, and keep an unsubscribe link in templates' bodies."""

from __future__ import annotations

from typing import Any

import httpx

from delivery.adapters.base import OutgoingEmail, ProviderError

DEFAULT_BASE_URL = "https://api.mixmax.com"


class MixmaxAdapter:
    """Settings: `base_url` (optional), `timeout`. Secrets: `api_token`."""

    kind = "mixmax"

    def __init__(self, settings: dict[str, Any], secrets: dict[str, Any]) -> None:
        self._url = settings.get("base_url", DEFAULT_BASE_URL).rstrip("/") + "/v1/send"
        self._client = httpx.AsyncClient(
            timeout=float(settings.get("timeout", 15)),
            headers={"X-API-Token": str(secrets.get("api_token", ""))},
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
        try:
            response = await self._client.post(self._url, json=self.payload(email))
        except httpx.TimeoutException as exc:
            raise ProviderError(f"mixmax timed out: {exc!r}", retryable=True) from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"mixmax unreachable: {exc!r}", retryable=True) from None
        if response.status_code in (200, 201, 202):
            try:
                body = response.json()
            except ValueError:
                body = {}
            return str(body.get("_id") or body.get("id") or email.message_id)
        retryable = response.status_code in (401, 403, 429) or response.status_code >= 500
        raise ProviderError(f"mixmax {response.status_code}: {response.text[:300]}", retryable=retryable)

    async def close(self) -> None:
        await self._client.aclose()
