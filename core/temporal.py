"""A Temporal client for HTTP processes, connected on first use so the API
starts (and serves everything else) while Temporal is still coming up."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from core.clients import connect_temporal
from core.errors import ServiceUnavailable
from core.settings import Settings


class TemporalConnection:
    """Connects once, on the first `get()`; retries on the next call after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        """The client, or ServiceUnavailable when Temporal does not answer."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect_temporal(self._settings),
                        timeout=self._settings.temporal_connect_timeout_seconds,
                    )
                # Any connect failure (the bridge's RuntimeError, TimeoutError,
                # a malformed address) means the same to callers: a 503.
                except Exception as exc:  # noqa: BLE001 - re-raised as ServiceUnavailable
                    raise ServiceUnavailable(
                        f"Temporal at {self._settings.temporal_address} is unavailable: {exc}"
                    ) from None
        return self._client
