"""Sending one message: the body of the `send_email` activity.

The `messages` row makes it idempotent. A retried activity finds the row
already `sent` (or `failed`, `suppressed`) and returns that outcome. If it
finds `sending`, an earlier attempt stopped while a provider was being
called — the provider may have accepted — so the message is marked
`unknown` and not sent again: at most once, never twice.

Order: lock the row → suppression check → render → tracking links and
unsubscribe headers → mark `sending` (committed) → router → record the
outcome and write `Email Sent`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from db.tables import templates
from definitions.messages import SendEmailResult
from delivery import repository as repo
from delivery.adapters import OutgoingEmail
from delivery.links import LinkSigner, apply_tracking, unsubscribe_url
from delivery.render import profile_context, render
from delivery.router import NoProviderAvailable, PermanentFailure, ProviderConfig, ProviderRouter

INTERRUPTED = "an earlier attempt stopped while a provider was being called; not sent again to avoid a duplicate"


class RetryLater(Exception):
    """No provider could take the message now; the activity should retry."""


class MessageMissing(Exception):
    """The message row does not exist."""


def provider_config(row: Any) -> ProviderConfig:
    """A provider row as the router takes it."""
    return ProviderConfig(
        id=row["id"], name=row["name"], kind=row["kind"], priority=row["priority"], rate_limit=row["rate_limit"],
        enabled=row["enabled"], settings=dict(row["settings"]), secrets=dict(row["secrets"]),
        version=row["updated_at"].isoformat(),
    )


def _attempts(attempts: list) -> list[dict[str, str]]:
    return [{"provider": a.provider, "outcome": a.outcome, "detail": a.detail[:500]} for a in attempts]


class EmailSender:
    """Built once in the worker (engine, router and signer are shared)."""

    def __init__(self, engine: AsyncEngine, router: ProviderRouter, settings: Settings) -> None:
        self._engine = engine
        self._router = router
        self._signer = LinkSigner(settings.secret_key)
        self._tracking_url = settings.tracking_url.rstrip("/")

    def _result(self, row: Any, status: str | None = None, error: str | None = None) -> SendEmailResult:
        return SendEmailResult(
            message_id=row["id"], status=status or row["status"], provider=row.get("provider_kind"),
            provider_message_id=row.get("provider_message_id"), error=error or row.get("error"),
        )

    async def send(self, workspace_id: uuid.UUID, message_id: uuid.UUID) -> SendEmailResult:
        """Send (or report) the message; raises RetryLater when every provider failed."""
        async with self._engine.begin() as conn:
            row = await repo.lock_message(conn, workspace_id, message_id)
            if row is None:
                raise MessageMissing(f"no message {message_id}")
            if row["status"] == "sending":
                await repo.set_message(conn, message_id, status="unknown", error=INTERRUPTED)
                return self._result(row, "unknown", INTERRUPTED)
            if row["status"] != "queued":
                return self._result(row)
            reason = await repo.is_suppressed(conn, workspace_id, row["email"])
            if reason is not None:
                error = f"address suppressed ({reason})"
                await repo.set_message(conn, message_id, status="suppressed", error=error)
                return self._result(row, "suppressed", error)
            template = await repo.get(conn, templates, repo.TEMPLATE_COLUMNS, workspace_id, row["template_id"]) \
                if row["template_id"] else None
            if template is None:
                error = "the template no longer exists"
                await repo.set_message(conn, message_id, status="failed", error=error)
                return self._result(row, "failed", error)
            providers = [provider_config(p) for p in await repo.enabled_providers(conn, workspace_id)]
            if not providers:
                error = "no enabled email provider in this workspace"
                await repo.set_message(conn, message_id, status="failed", error=error)
                return self._result(row, "failed", error)
            profile = await repo.profile_for_send(conn, workspace_id, row["profile_id"]) if row["profile_id"] else None
            outgoing, links = self._compose(row, template, profile)
            await repo.set_message(conn, message_id, status="sending", subject=outgoing.subject, links=links)

        try:
            delivery = await self._router.send(providers, outgoing)
        except PermanentFailure as exc:
            async with self._engine.begin() as conn:
                await repo.set_message(conn, message_id, status="failed", error=exc.reason[:1000],
                                       attempts=_attempts(exc.attempts))
            return self._result(row, "failed", exc.reason)
        except NoProviderAvailable as exc:
            async with self._engine.begin() as conn:
                # Nothing was accepted: back to the queue for the activity's retry.
                await repo.set_message(conn, message_id, status="queued", error=str(exc)[:1000],
                                       attempts=_attempts(exc.attempts))
            raise RetryLater(str(exc)) from None

        sent_at = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await repo.set_message(
                conn, message_id, status="sent", error=None, provider_id=delivery.provider_id,
                provider_kind=delivery.provider_kind, provider_message_id=delivery.provider_message_id,
                sent_at=sent_at, attempts=_attempts(delivery.attempts),
            )
            if row["profile_id"]:
                await repo.write_event(
                    conn, workspace_id, row["profile_id"], "Email Sent",
                    {"message_id": str(message_id), "template_id": str(row["template_id"]),
                     "campaign_id": row["campaign_id"], "provider": delivery.provider_kind},
                    sent_at, f"email:{message_id}:sent",
                )
        return SendEmailResult(
            message_id=message_id, status="sent", provider=delivery.provider_kind,
            provider_message_id=delivery.provider_message_id,
        )

    def _compose(self, row: Any, template: Any, profile: Any) -> tuple[OutgoingEmail, list[str]]:
        message_id = row["id"]
        unsubscribe = unsubscribe_url(self._signer, self._tracking_url, message_id)
        data = dict(row["data"] or {})
        context = {
            "profile": profile_context(dict(profile) if profile else None, row["email"]),
            "event": data.pop("event", {}) or {},
            "data": data,
            "unsubscribe_url": unsubscribe,
        }
        rendered = render(template["subject"], template["html"], template["text"], context)
        tracked = apply_tracking(rendered.html, self._signer, self._tracking_url, message_id)
        outgoing = OutgoingEmail(
            message_id=message_id, to=row["email"], from_email=template["from_email"],
            from_name=template["from_name"], reply_to=template["reply_to"], subject=rendered.subject,
            html=tracked.html, text=rendered.text,
            headers={"List-Unsubscribe": f"<{unsubscribe}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        )
        return outgoing, tracked.links
