"""What happens after a send: opens, clicks and unsubscribes from our own
links, and delivery / bounce / complaint (and provider-tracked opens and
clicks) from provider webhooks. Each becomes an `Email …` event on the
profile and updates the message; hard bounces, complaints and unsubscribes
suppress the address for every provider. Every event has an idempotency
key, so a repeated webhook changes nothing the second time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.ids import uuid7
from definitions.events import email_event, email_event_key
from delivery import repository as repo
from delivery.links import KIND_CLICK, KIND_OPEN, LinkSigner

# provider-neutral kinds → (message column stamped first, status, statuses it may replace);
# each is stored as the event definitions.events.email_event(kind).
_KINDS: dict[str, tuple[str | None, str | None, tuple[str, ...]]] = {
    "delivered": ("delivered_at", "delivered", ("sent", "sending", "unknown")),
    "bounced": (None, "bounced", ("sent", "sending", "delivered", "unknown")),
    "complained": (None, "complained", ("sent", "delivered", "unknown")),
    "opened": ("opened_at", None, ()),
    "clicked": ("clicked_at", None, ()),
    "unsubscribed": (None, None, ()),
}


async def record(
    conn: AsyncConnection,
    message: Any,
    kind: str,
    occurred_at: datetime,
    source: str | None,
    properties: dict[str, Any] | None = None,
    *,
    suppress_reason: str | None = None,
) -> bool:
    """Apply one engagement or delivery event to a message; False when this
    event was already recorded. `source` tells repeated events of a kind
    apart (a provider's event id, one click); None records the kind once."""
    column, status, replaces = _KINDS[kind]
    name = email_event(kind).value
    props = {
        "message_id": str(message["id"]),
        "campaign_id": message["campaign_id"],
        "template_id": str(message["template_id"]) if message["template_id"] else None,
        **({"topic": message["topic"]} if message["topic"] else {}),
        **(properties or {}),
    }
    if message["profile_id"] is not None:
        fresh = await repo.write_event(
            conn,
            message["workspace_id"],
            message["profile_id"],
            name,
            props,
            occurred_at,
            email_event_key(message["id"], kind, source),
        )
        if not fresh:
            return False
    await _status(conn, message["id"], status, replaces, properties)
    if column is not None:
        await repo.mark_first(conn, message["id"], column, occurred_at)
    if suppress_reason is not None:
        await repo.suppress(
            conn, message["workspace_id"], message["email"], suppress_reason, (properties or {}).get("detail")
        )
    return True


async def _status(
    conn: AsyncConnection,
    message_id: uuid.UUID,
    status: str | None,
    replaces: tuple[str, ...],
    properties: dict[str, Any] | None,
) -> None:
    if status is None:
        return
    values: dict[str, Any] = {}
    detail = (properties or {}).get("detail")
    if detail and status in ("bounced", "complained"):
        values["error"] = str(detail)[:1000]
    await repo.set_status_if(conn, message_id, status, replaces, **values)


class LinkEvents:
    """Opens and clicks arriving through signed links (unsubscribe links:
    delivery/preferences.py)."""

    def __init__(self, engine: AsyncEngine, signer: LinkSigner) -> None:
        self._engine = engine
        self._signer = signer

    async def open(self, token: str) -> bool:
        """Record an open; False for a bad token."""
        verified = self._signer.verify(token, KIND_OPEN)
        if verified is None:
            return False
        async with self._engine.begin() as conn:
            message = await repo.message_by_id(conn, verified.message_id)
            if message is None:
                return False
            now = datetime.now(UTC)
            await record(conn, message, "opened", now, f"link:{uuid7()}")
        return True

    async def click(self, token: str) -> str | None:
        """Record a click and return its destination; None for a bad token."""
        verified = self._signer.verify(token, KIND_CLICK)
        if verified is None:
            return None
        async with self._engine.begin() as conn:
            message = await repo.message_by_id(conn, verified.message_id)
            links = message["links"] if message else []
            if message is None or verified.index >= len(links):
                return None
            url = links[verified.index]
            now = datetime.now(UTC)
            await record(conn, message, "clicked", now, f"link:{uuid7()}", {"url": url})
        return url
