"""Sending one message: the body of the `send_email` activity.

The `messages` row makes it idempotent. A retried activity finds the row
already `sent` (or `failed`, `suppressed`) and returns that outcome. If it
finds `sending`, an earlier attempt stopped while a provider was being
called — the provider may have accepted — so the message is marked
`unknown` and not sent again: at most once, never twice. When no provider
was called (every one failed, open or rate-limited, or Redis — which holds
breakers and rate limits — is unreachable) the message goes back to
`queued` and the activity raises a retryable error, so Temporal tries
again with backoff and the message goes out once Redis is back.

Order: read the row (with its suppression, whether the person left the
message's topic, and the profile) → render →
tracking links and unsubscribe headers → router: breaker and rate limit,
then claim the message (`queued` → `sending`, one conditional update) just
before the first provider call → record the outcome and `Email Sent` (one
statement). Waiting for Redis or a rate-limit token happens while the
message is still `queued`, so an attempt that stops there is retried, not
marked `unknown`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from core.secret_box import SecretBox
from core.settings import Settings
from db import queries
from db.engine import create_asyncpg_pool
from db.tables import templates
from definitions.messages import SendEmailResult
from delivery import repository as repo
from delivery import send_repository as send_repo
from delivery.adapters import OutgoingEmail
from delivery.links import LinkSigner, apply_tracking, unsubscribe_url
from delivery.render import RenderFailed, profile_context, render_async
from delivery.router import (
    ClaimLost,
    LimitsUnavailable,
    NoProviderAvailable,
    PermanentFailure,
    ProviderConfig,
    ProviderRouter,
)

INTERRUPTED = (
    "an earlier attempt stopped while a provider was being called; not sent again to avoid a duplicate"
)


class RetryLater(Exception):
    """No provider could take the message now; the activity should retry."""


class MessageMissing(Exception):
    """The message row does not exist."""


def provider_config(row: Any, box: SecretBox) -> ProviderConfig:
    """A provider row as the router takes it, its secrets decrypted."""
    return ProviderConfig(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        priority=row["priority"],
        rate_limit=row["rate_limit"],
        enabled=row["enabled"],
        settings=dict(row["settings"]),
        secrets=box.decrypt_values(row["secrets"]),
        version=row["updated_at"].isoformat(),
    )


def _attempts(attempts: list) -> list[dict[str, str]]:
    return [{"provider": a.provider, "outcome": a.outcome, "detail": a.detail[:500]} for a in attempts]


# Key of a message's `data` holding changes to its template: subject (a
# template string itself), from_name, from_email, reply_to.
OVERRIDES_KEY = "$overrides"


class EmailSender:
    """Built once in the worker (engine, router and signer are shared)."""

    def __init__(
        self,
        engine: AsyncEngine,
        router: ProviderRouter,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._router = router
        # Providers and templates are read per workspace / template at most
        # every `cache_seconds` (so a provider change reaches senders within that).
        self._cache: dict[tuple, tuple[float, Any]] = {}
        self._cache_seconds = settings.email_send_cache_seconds
        # The hot path runs on its own asyncpg pool (three statements a message).
        self._database_url = settings.database_url
        self._pool_size = settings.email_send_pool_size
        self._pool_min_size = settings.db_pool_min_size
        self._command_timeout = settings.db_command_timeout_seconds
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._signer = LinkSigner(settings.secret_key)
        self._box = SecretBox.from_settings(settings)
        self._tracking_url = settings.tracking_url.rstrip("/")

    def _result(self, row: Any, status: str | None = None, error: str | None = None) -> SendEmailResult:
        return SendEmailResult(
            message_id=row["id"],
            status=status or row["status"],
            provider=row.get("provider_kind"),
            provider_message_id=row.get("provider_message_id"),
            error=error or row.get("error"),
        )

    async def _cached(self, key: tuple, load: Any) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if not value:  # absence is never cached: a provider added now is used now
            return value
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._cache_seconds, value)
        return value

    async def _providers(self, workspace_id: uuid.UUID) -> list[ProviderConfig]:
        async def load() -> list[ProviderConfig]:
            async with self._engine.connect() as conn:
                rows = await repo.enabled_providers(conn, workspace_id)
            return [provider_config(p, self._box) for p in rows]

        return await self._cached(("providers", workspace_id), load)

    async def _template(self, workspace_id: uuid.UUID, template_id: uuid.UUID) -> Any:
        async def load() -> Any:
            async with self._engine.connect() as conn:
                return await queries.get(conn, templates, repo.TEMPLATE_COLUMNS, workspace_id, template_id)

        return await self._cached(("template", template_id), load)

    async def _conn_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await create_asyncpg_pool(
                        self._database_url,
                        size=self._pool_size,
                        min_size=self._pool_min_size,
                        command_timeout=self._command_timeout,
                    )
        return self._pool

    async def close(self) -> None:
        """Close the sender's connections."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def send(self, workspace_id: uuid.UUID, message_id: uuid.UUID) -> SendEmailResult:
        """Send (or report) the message; raises RetryLater when every provider failed."""
        pool = await self._conn_pool()
        async with pool.acquire() as conn:
            row = await send_repo.load(conn, workspace_id, message_id)
            if row is None:
                raise MessageMissing(f"no message {message_id}")
            if row["status"] == "sending":
                await send_repo.set_status(
                    conn, workspace_id, message_id, "unknown", INTERRUPTED, only_from=("sending",)
                )
                return self._result(row, "unknown", INTERRUPTED)
            if row["status"] != "queued":
                return self._result(row)
            if row["suppressed_reason"] is not None:
                error = f"address suppressed ({row['suppressed_reason']})"
                await send_repo.set_status(
                    conn, workspace_id, message_id, "suppressed", error, only_from=("queued",)
                )
                return self._result(row, "suppressed", error)
            if row["topic_opted_out"]:
                error = f"the person left the topic {row['topic']!r}"
                await send_repo.set_status(
                    conn, workspace_id, message_id, "suppressed", error, only_from=("queued",)
                )
                return self._result(row, "suppressed", error)
            template = await self._template(workspace_id, row["template_id"]) if row["template_id"] else None
            providers = await self._providers(workspace_id)
            error = (
                "the template no longer exists"
                if template is None
                else "no enabled email provider in this workspace"
                if not providers
                else None
            )
            if error is not None:
                await send_repo.set_status(
                    conn, workspace_id, message_id, "failed", error, only_from=("queued",)
                )
                return self._result(row, "failed", error)
            profile = None
            if row["profile_id"] is not None:
                profile = {
                    "id": row["profile_id"],
                    "email": row["profile_email"],
                    "external_id": row["profile_external_id"],
                    "traits": row["profile_traits"],
                }
            try:
                outgoing, links = await self._compose(row, template, profile)
            except RenderFailed as exc:
                # Permanent: the same template fails the same way on every retry.
                error = f"the template could not be rendered: {exc}"[:1000]
                await send_repo.set_status(
                    conn, workspace_id, message_id, "failed", error, only_from=("queued",)
                )
                return self._result(row, "failed", error)
            claimed = False

            async def claim() -> bool:
                nonlocal claimed
                claimed = await send_repo.claim(conn, workspace_id, message_id, outgoing.subject, links)
                return claimed

            try:
                delivery = await self._router.send(providers, outgoing, claim)
            except ClaimLost:
                # Another attempt claimed it between our read and now: report its state.
                current = await send_repo.load(conn, workspace_id, message_id)
                return self._result(current)
            except PermanentFailure as exc:
                await send_repo.set_status(
                    conn,
                    workspace_id,
                    message_id,
                    "failed",
                    exc.reason[:1000],
                    attempts=_attempts(exc.attempts),
                    only_from=("sending",),
                )
                return self._result(row, "failed", exc.reason)
            except (NoProviderAvailable, LimitsUnavailable) as exc:
                # Nothing was accepted: (back) to the queue for the activity's
                # retry, with why; a row another attempt claimed is left alone.
                await send_repo.set_status(
                    conn,
                    workspace_id,
                    message_id,
                    "queued",
                    str(exc)[:1000],
                    attempts=_attempts(exc.attempts),
                    only_from=("sending",) if claimed else ("queued",),
                )
                raise RetryLater(str(exc)) from None
            await send_repo.sent(
                conn,
                workspace_id,
                message_id,
                provider_id=delivery.provider_id,
                provider_kind=delivery.provider_kind,
                provider_message_id=delivery.provider_message_id,
                sent_at=datetime.now(UTC),
                attempts=_attempts(delivery.attempts),
                event_properties={
                    "message_id": str(message_id),
                    "template_id": str(row["template_id"]),
                    "campaign_id": row["campaign_id"],
                    "provider": delivery.provider_kind,
                    **({"topic": row["topic"]} if row["topic"] else {}),
                },
            )
        return SendEmailResult(
            message_id=message_id,
            status="sent",
            provider=delivery.provider_kind,
            provider_message_id=delivery.provider_message_id,
        )

    async def _compose(self, row: Any, template: Any, profile: Any) -> tuple[OutgoingEmail, list[str]]:
        message_id = row["id"]
        unsubscribe = unsubscribe_url(self._signer, self._tracking_url, message_id)
        data = dict(row["data"] or {})
        # Per-message changes to the template (a flow's send_email node).
        overrides = data.pop(OVERRIDES_KEY, None) or {}
        context = {
            "profile": profile_context(dict(profile) if profile else None, row["email"]),
            "event": data.pop("event", {}) or {},
            "data": data,
            "unsubscribe_url": unsubscribe,
        }
        rendered = await render_async(
            overrides.get("subject") or template["subject"],
            template["html"],
            template["text"],
            context,
            strict=True,
        )
        tracked = apply_tracking(rendered.html, self._signer, self._tracking_url, message_id)
        outgoing = OutgoingEmail(
            message_id=message_id,
            to=row["email"],
            from_email=overrides.get("from_email") or template["from_email"],
            from_name=overrides.get("from_name") or template["from_name"],
            reply_to=overrides.get("reply_to") or template["reply_to"],
            subject=rendered.subject,
            html=tracked.html,
            text=rendered.text,
            headers={
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        return outgoing, tracked.links
