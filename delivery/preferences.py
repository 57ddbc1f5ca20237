"""The preference center behind a message's unsubscribe link.

A message's unsubscribe token (delivery/links.py) names the message, and
through it the workspace and the person; nothing else is trusted. What
happens:

- the page (GET) shows the workspace's topics with the person's current
  choice and "unsubscribe from all"; a GET never changes anything (link
  scanners follow GETs);
- saving the page's form records each changed choice (`Topic Unsubscribed`
  / `Topic Resubscribed`), and when the person left the message's own
  topic, `Email Unsubscribed` on the message (scope `topic`, for its stats);
- "unsubscribe from all" suppresses the address for every provider and
  records `Email Unsubscribed` (scope `all`), as before topics existed;
- "resubscribe to all" undoes both: every topic the person left is joined
  again (`Topic Resubscribed` each) and an unsubscribe suppression is
  lifted. Bounces and complaints stay suppressed: they are not the
  person's choice (the page says so);
- the RFC 8058 one-click POST leaves the message's topic at once when the
  message has one, and unsubscribes from all when it has none (or when the
  person's profile is gone, so no choice can be stored for them).

Each change is idempotent: a choice already made writes nothing, and the
message's `Email Unsubscribed` is recorded once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from delivery import repository as repo
from delivery.engagement import record
from delivery.links import KIND_UNSUBSCRIBE, LinkSigner
from topics import repository as topics_repo

# The suppression reason of "unsubscribe from all" (the one a person may undo).
UNSUBSCRIBED = "unsubscribed"


@dataclass
class PreferenceView:
    """What the preference page shows."""

    message: Any
    topics: list[Any] = field(default_factory=list)
    opted_out: set[str] = field(default_factory=set)
    # False when the message has no (existing) profile: only "unsubscribe from all" is offered.
    can_choose: bool = False
    suppressed: str | None = None  # the reason, when the address gets no email at all


@dataclass
class Unsubscribed:
    """The outcome of a one-click or "unsubscribe from all": the topic left,
    or None when the address was unsubscribed from everything."""

    message: Any
    topic: str | None


class PreferenceCenter:
    """Reads and changes a person's choices through their message's token."""

    def __init__(self, engine: AsyncEngine, signer: LinkSigner) -> None:
        self._engine = engine
        self._signer = signer

    async def _message(self, conn: AsyncConnection, token: str) -> Any | None:
        verified = self._signer.verify(token, KIND_UNSUBSCRIBE)
        if verified is None:
            return None
        return await repo.message_by_id(conn, verified.message_id)

    async def _view(self, conn: AsyncConnection, message: Any, *, lock: bool) -> PreferenceView:
        ws, profile_id = message["workspace_id"], message["profile_id"]
        view = PreferenceView(message, topics=list(await topics_repo.workspace_topics(conn, ws)))
        if profile_id is not None and await topics_repo.lock_profile(conn, ws, profile_id, lock=lock):
            view.can_choose = True
            view.opted_out = set(await topics_repo.opted_out(conn, ws, profile_id))
        found = await repo.get_suppression(conn, ws, message["email"])
        view.suppressed = found["reason"] if found else None
        return view

    async def view(self, token: str) -> PreferenceView | None:
        """The page's content; None for a bad token. Changes nothing."""
        async with self._engine.connect() as conn:
            message = await self._message(conn, token)
            return None if message is None else await self._view(conn, message, lock=False)

    async def save(self, token: str, subscribed: set[str], method: str = "page") -> PreferenceView | None:
        """Keep the person in the workspace's topics named in `subscribed` and
        opt them out of the others; None for a bad token. Keys that are not
        the workspace's topics are ignored."""
        async with self._engine.begin() as conn:
            message = await self._message(conn, token)
            if message is None:
                return None
            view = await self._view(conn, message, lock=True)
            if not view.can_choose:
                return view
            ws, profile_id = message["workspace_id"], message["profile_id"]
            props = {"method": method, "message_id": str(message["id"])}
            for topic in view.topics:
                key = topic["key"]
                await topics_repo.set_choice(conn, ws, profile_id, key, key in subscribed, props)
            view.opted_out = set(await topics_repo.opted_out(conn, ws, profile_id))
            if message["topic"] is not None and message["topic"] in view.opted_out:
                await _record_unsubscribed(conn, message, method, message["topic"])
        return view

    async def resubscribe_all(self, token: str, method: str = "page") -> PreferenceView | None:
        """Join every topic again and lift an unsubscribe suppression of the
        address (not a bounce or complaint); None for a bad token."""
        async with self._engine.begin() as conn:
            message = await self._message(conn, token)
            if message is None:
                return None
            view = await self._view(conn, message, lock=True)
            ws, profile_id = message["workspace_id"], message["profile_id"]
            if view.can_choose:
                props = {"method": method, "message_id": str(message["id"])}
                for key in sorted(view.opted_out):
                    await topics_repo.set_choice(conn, ws, profile_id, key, True, props)
            if view.suppressed == UNSUBSCRIBED:
                await repo.unsuppress(conn, ws, message["email"])
            return await self._view(conn, message, lock=False)

    async def unsubscribe(self, token: str, method: str, *, everything: bool = False) -> Unsubscribed | None:
        """Leave the message's topic (one-click), or every email when
        `everything` or the message has no topic; None for a bad token."""
        async with self._engine.begin() as conn:
            message = await self._message(conn, token)
            if message is None:
                return None
            ws, profile_id, topic = message["workspace_id"], message["profile_id"], message["topic"]
            if (
                not everything
                and topic is not None
                and profile_id is not None
                and await topics_repo.lock_profile(conn, ws, profile_id, lock=True)
            ):
                props = {"method": method, "message_id": str(message["id"])}
                await topics_repo.set_choice(conn, ws, profile_id, topic, False, props)
                await _record_unsubscribed(conn, message, method, topic)
                return Unsubscribed(message, topic)
            await _record_unsubscribed(conn, message, method, None)
        return Unsubscribed(message, None)


async def _record_unsubscribed(conn: AsyncConnection, message: Any, method: str, topic: str | None) -> None:
    """`Email Unsubscribed` on the message (once); leaving every email also
    suppresses the address for every provider (even when the message's
    event was recorded earlier, for its topic)."""
    scope = "topic" if topic is not None else "all"
    await record(conn, message, "unsubscribed", datetime.now(UTC), None, {"method": method, "scope": scope})
    if topic is None:
        await repo.suppress(conn, message["workspace_id"], message["email"], UNSUBSCRIBED)
