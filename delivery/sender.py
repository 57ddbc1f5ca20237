"""Sending one message: the body of the `send_email` activity.

The `messages` row makes it idempotent. A retried activity finds the row
already `sent` (or `failed`, `suppressed`) and returns that outcome. If it
finds `sending`, an earlier attempt stopped while a provider was being
called — the provider may have accepted. Reconciliation (reconcile.py)
then asks the providers, once the claim has settled: found → `sent`;
missing everywhere → claimed again and sent; not decidable (a provider
without lookup, lookups failing until the give-up age) → `unknown`, not
sent again: at most once, never twice. While it waits, the row stays
`sending` and the activity raises RetryLater after the rest. When no provider
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from core.ids import uuid7
from core.secret_box import SecretBox
from core.settings import Settings
from db import queries
from db.engine import create_asyncpg_pool
from db.tables import templates
from definitions.events import email_event_key
from definitions.messages import SendEmailResult
from delivery import repository as repo
from delivery import send_repository as send_repo
from delivery.adapters import OutgoingEmail
from delivery.links import LinkSigner, apply_tracking, unsubscribe_url
from delivery.reconcile import Reconciler
from delivery.render import RenderFailed, profile_context, render_async, render_many_async
from delivery.router import (
    Attempt,
    ClaimLost,
    Delivery,
    LimitsUnavailable,
    NoProviderAvailable,
    PermanentFailure,
    ProviderConfig,
    ProviderRouter,
)

INTERRUPTED = (
    "an earlier attempt stopped while a provider was being called; not sent again to avoid a duplicate"
)
# A claim reconciliation found at no provider, back in the queue.
REQUEUED = "an earlier attempt stopped while a provider was being called; no provider has it: sending again"


class RetryLater(Exception):
    """Not done now — no provider could take the message, or an interrupted
    send waits to be looked up; the activity should retry."""


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
# template string itself), from_name, from_email, reply_to; without a
# template, the whole content (also html and text: a campaign's test send).
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
        # Messages per batch group (claimed and recorded together) when the
        # provider has no batch interface, and provider calls in flight in
        # all of this worker's batches at once (a batch request counts one):
        # more would only queue for the adapters' HTTP connections (100
        # each) and time out there, which the router would count against
        # the provider.
        self._batch_concurrency = settings.campaign_send_concurrency
        self._batch_slots = asyncio.Semaphore(settings.campaign_send_concurrency)
        self._reconciler = Reconciler(
            router,
            settle_seconds=settings.email_reconcile_settle_seconds,
            give_up_seconds=settings.email_reconcile_give_up_seconds,
        )

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
                kept, closed, waiting = await self._reconcile(
                    conn, workspace_id, [row], await self._providers(workspace_id)
                )
                if waiting:
                    raise RetryLater(f"an interrupted send waits to be looked up: {waiting[0]}")
                if closed:  # found (`sent`) or undecidable (`unknown`), from `sending` only
                    await send_repo.record_many(conn, workspace_id, [closed[0].recordset()])
                    return closed[0].result()
                row = kept[0]
            outcome = self._precheck(row)
            if outcome is None:
                template = await self._content_of(workspace_id, row)
                providers = await self._providers(workspace_id)
                outcome = self._unsendable(row, template, providers)
            if outcome is None:
                try:
                    outgoing, links = await self._compose(row, template, _profile(row))
                except RenderFailed as exc:
                    outcome = _render_failed(row, exc)
            if outcome is None:

                async def claim() -> bool:
                    return await send_repo.claim(conn, workspace_id, message_id, outgoing.subject, links)

                outcome = await self._route(row, providers, outgoing, claim)
                if outcome.status == LOST:
                    # Another attempt claimed it between our read and now: report its state.
                    current = await send_repo.load(conn, workspace_id, message_id)
                    return self._result(current)
            await self._record_one(conn, workspace_id, outcome)
        if outcome.status == "queued":
            raise RetryLater(outcome.error or "no provider could take the message")
        return outcome.result()

    async def send_batch(
        self,
        workspace_id: uuid.UUID,
        message_ids: list[uuid.UUID],
        content: dict[str, Any] | None,
        data: dict[str, Any],
        *,
        stop: asyncio.Event | None = None,
    ) -> list[SendEmailResult]:
        """Send (or report) many messages of one content (a campaign batch):
        the same checks, rendering, tracking and router as `send`, with the
        bookkeeping and the provider calls batched — one statement loads
        the messages; each group (as many as one request of the first
        provider's batch interface takes, else `concurrency`) goes through
        the router's `send_many`, is claimed in one statement just before
        its provider call and recorded in one. `content` is the template the
        messages share (None: it no longer exists, they fail); `data` their
        `data` variables. Raises RetryLater after recording everything, when
        some message found no provider or waits for its interrupted send to
        be looked up (the retry handles only those). Once
        `stop` is set no further group starts (those left stay queued)."""
        pool = await self._conn_pool()
        results: list[SendEmailResult] = []
        retry: list[str] = []
        async with pool.acquire() as conn:
            rows = await send_repo.load_many(conn, workspace_id, message_ids)
            providers = await self._providers(workspace_id) if rows else []
            rows, closed, waiting = await self._reconcile(conn, workspace_id, rows, providers)
            retry.extend(f"an interrupted send waits to be looked up: {why}" for why in waiting)
            ready: list[tuple[Any, OutgoingEmail, list[str]]] = []
            pending: list[Any] = []
            for row in rows:
                outcome = self._precheck(row) or self._unsendable(row, content, providers)
                if outcome is not None:
                    closed.append(outcome)
                else:
                    pending.append(row)
            if pending:
                assert content is not None
                contexts = [self._context(row, _profile(row), dict(data)) for row in pending]
                rendered = await render_many_async(
                    content["subject"], content["html"], content["text"], contexts
                )
                for row, context, result in zip(pending, contexts, rendered, strict=True):
                    if isinstance(result, RenderFailed):
                        closed.append(_render_failed(row, result))
                    else:
                        ready.append((row, *self._outgoing(row, content, {}, result, context)))
            links_of = {row["id"]: (row, links) for row, _, links in ready}

            async def claim(emails: list[OutgoingEmail]) -> set[uuid.UUID]:
                return await send_repo.claim_many(
                    conn, workspace_id, [(e.message_id, e.subject, links_of[e.message_id][1]) for e in emails]
                )

            size = self._router.batch_size(providers) or self._batch_concurrency
            chunks = [ready[i : i + size] for i in range(0, len(ready), size)]
            for chunk in chunks or [[]]:
                if stop is not None and stop.is_set():
                    break
                routed = await self._route_many(providers, chunk, claim)
                outcomes = closed + [o for o in routed if o.status != LOST]
                closed = []
                await send_repo.record_many(conn, workspace_id, [o.recordset() for o in outcomes if o.record])
                for outcome in outcomes:
                    if outcome.status == "queued":
                        retry.append(outcome.error or "")
                    results.append(outcome.result())
                activity_beat(len(results))
        if retry:
            raise RetryLater(f"{len(retry)} messages are not done yet: {retry[0]}")
        return results

    # -- the steps both paths share --------------------------------------------

    async def _reconcile(
        self,
        conn: asyncpg.Connection,
        workspace_id: uuid.UUID,
        rows: list[Any],
        providers: list[ProviderConfig],
    ) -> tuple[list[Any], list[Outcome], list[str]]:
        """Resolve the `sending` rows among `rows` (see reconcile.py):
        (rows to go on with — the others, and those found missing, back to
        `queued`; outcomes of those decided — found `sent`, or `unknown`;
        why each still waiting waits — they stay `sending`)."""
        interrupted = [row for row in rows if row["status"] == "sending"]
        if not interrupted:
            return rows, [], []
        verdicts = await self._reconciler.resolve(interrupted, providers)
        closed = [
            Outcome(row, "unknown", f"{INTERRUPTED} ({why})"[:1000], only_from="sending")
            for row, why in verdicts.unknown
        ]
        for row, provider, provider_message_id in verdicts.found:
            attempt = Attempt(
                provider.name, "sent", f"found by lookup after an interrupted attempt: {provider_message_id}"
            )
            delivery = Delivery(provider.id, provider.kind, provider_message_id, [attempt])
            closed.append(Outcome(row, "sent", only_from="sending", delivery=delivery, attempts=[attempt]))
        requeued = await send_repo.requeue(
            conn, workspace_id, [(row["id"], row["changed_at"]) for row in verdicts.missing], REQUEUED
        )
        waiting = [why for _, why in verdicts.waiting]
        kept = [row for row in rows if row["status"] != "sending"]
        for row in verdicts.missing:
            if row["id"] in requeued:
                kept.append({**dict(row), "status": "queued", "error": REQUEUED})
            else:  # another attempt changed it meanwhile: see on the next try
                waiting.append("changed by another attempt while being looked up")
        return kept, closed, waiting

    def _precheck(self, row: Any) -> Outcome | None:
        """The message's fate when it must not be sent now: already handled
        (reported as it is), claimed by an attempt that stopped (`unknown`),
        or suppressed. None: go on."""
        if row["status"] == "sending":
            return Outcome(row, "unknown", INTERRUPTED, only_from="sending")
        if row["status"] != "queued":
            return Outcome(row, row["status"], row["error"], record=False)
        if row["suppressed_reason"] is not None:
            return Outcome(row, "suppressed", f"address suppressed ({row['suppressed_reason']})")
        if row["topic_opted_out"]:
            return Outcome(row, "suppressed", f"the person left the topic {row['topic']!r}")
        return None

    @staticmethod
    def _unsendable(row: Any, template: Any, providers: list[ProviderConfig]) -> Outcome | None:
        if template is None:
            return Outcome(row, "failed", "the template no longer exists")
        if not providers:
            return Outcome(row, "failed", "no enabled email provider in this workspace")
        return None

    async def _content_of(self, workspace_id: uuid.UUID, row: Any) -> Any:
        """The template a message renders: its template row, or inline
        content carried in its overrides (a campaign's test send)."""
        if row["template_id"]:
            return await self._template(workspace_id, row["template_id"])
        overrides = (row["data"] or {}).get(OVERRIDES_KEY) or {}
        if overrides.get("html") and overrides.get("subject") and overrides.get("from_email"):
            return {**INLINE_DEFAULTS, **overrides}
        return None

    async def _route_many(
        self, providers: list[ProviderConfig], chunk: list[tuple[Any, OutgoingEmail, list[str]]], claim: Any
    ) -> list[Outcome]:
        """`_route` for a chunk of a batch, through the router's batch path
        (the provider's batch interface where it has one); `claim` takes
        the messages about to go to a provider for the first time."""
        if not chunk:
            return []
        claimed: set[uuid.UUID] = set()

        async def claiming(emails: list[OutgoingEmail]) -> set[uuid.UUID]:
            owned = await claim(emails)
            claimed.update(owned)
            return owned

        answers = await self._router.send_many(
            providers, [outgoing for _, outgoing, _ in chunk], claiming, self._batch_slots
        )
        return [
            self._outcome(row, answer, row["id"] in claimed)
            for (row, _, _), answer in zip(chunk, answers, strict=True)
        ]

    @staticmethod
    def _outcome(row: Any, answer: Delivery | Exception, claimed: bool) -> Outcome:
        """Where a message ends after the router's answer: its delivery, or
        the error it raised for this message."""
        if isinstance(answer, Delivery):
            return Outcome(row, "sent", only_from="sending", delivery=answer, attempts=answer.attempts)
        if isinstance(answer, ClaimLost):
            return Outcome(row, LOST, record=False)
        if isinstance(answer, PermanentFailure):
            return Outcome(row, "failed", answer.reason[:1000], only_from="sending", attempts=answer.attempts)
        if isinstance(answer, NoProviderAvailable | LimitsUnavailable):
            # Nothing was accepted: (back) to the queue for a retry, with why;
            # a row another attempt claimed is left alone.
            return Outcome(
                row,
                "queued",
                str(answer)[:1000],
                only_from="sending" if claimed else "queued",
                attempts=answer.attempts,
            )
        raise answer

    async def _route(
        self, row: Any, providers: list[ProviderConfig], outgoing: OutgoingEmail, claim: Any
    ) -> Outcome:
        """Hand the message to the router; `claim` is awaited just before
        the first provider call."""
        claimed = False

        async def claiming() -> bool:
            nonlocal claimed
            claimed = await claim()
            return claimed

        try:
            answer: Delivery | Exception = await self._router.send(providers, outgoing, claiming)
        except (ClaimLost, PermanentFailure, NoProviderAvailable, LimitsUnavailable) as exc:
            answer = exc
        return self._outcome(row, answer, claimed)

    async def _record_one(self, conn: asyncpg.Connection, workspace_id: uuid.UUID, outcome: Outcome) -> None:
        if not outcome.record:
            return
        message_id = outcome.row["id"]
        if outcome.status != "sent":
            await send_repo.set_status(
                conn,
                workspace_id,
                message_id,
                outcome.status,
                outcome.error,
                attempts=_attempts(outcome.attempts) if outcome.attempts is not None else None,
                only_from=(outcome.only_from,),
            )
            return
        delivery = outcome.delivery
        assert delivery is not None
        await send_repo.sent(
            conn,
            workspace_id,
            message_id,
            provider_id=delivery.provider_id,
            provider_kind=delivery.provider_kind,
            provider_message_id=delivery.provider_message_id,
            sent_at=datetime.now(UTC),
            attempts=_attempts(delivery.attempts),
            event_properties=outcome.event_properties(),
        )

    def _context(self, row: Any, profile: Any, data: dict[str, Any]) -> dict[str, Any]:
        """The variables a message renders with (`data` is consumed)."""
        return {
            "profile": profile_context(dict(profile) if profile else None, row["email"]),
            "event": data.pop("event", {}) or {},
            "data": data,
            "unsubscribe_url": unsubscribe_url(self._signer, self._tracking_url, row["id"]),
        }

    def _outgoing(
        self, row: Any, template: Any, overrides: dict[str, Any], rendered: Any, context: dict[str, Any]
    ) -> tuple[OutgoingEmail, list[str]]:
        """A rendered message with its tracking links and unsubscribe headers."""
        message_id = row["id"]
        unsubscribe = context["unsubscribe_url"]
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

    async def _compose(self, row: Any, template: Any, profile: Any) -> tuple[OutgoingEmail, list[str]]:
        data = dict(row["data"] or {})
        # Per-message changes to the template (a flow's send_email node).
        overrides = data.pop(OVERRIDES_KEY, None) or {}
        context = self._context(row, profile, data)
        rendered = await render_async(
            overrides.get("subject") or template["subject"],
            template["html"],
            template["text"],
            context,
            strict=True,
        )
        return self._outgoing(row, template, overrides, rendered, context)


# The router's answer when another attempt claimed the message first.
LOST = "lost"
# Fields an inline content (no template row) may leave out.
INLINE_DEFAULTS = {"text": None, "from_name": None, "reply_to": None}


def _profile(row: Any) -> dict[str, Any] | None:
    if row["profile_id"] is None:
        return None
    return {
        "id": row["profile_id"],
        "email": row["profile_email"],
        "external_id": row["profile_external_id"],
        "traits": row["profile_traits"],
    }


def _render_failed(row: Any, exc: RenderFailed) -> Outcome:
    # Permanent: the same template fails the same way on every retry.
    return Outcome(row, "failed", f"the template could not be rendered: {exc}"[:1000])


def activity_beat(done: int) -> None:
    """Heartbeat the messages done so far when running in an activity."""
    if activity.in_activity():
        activity.heartbeat(done)


@dataclass
class Outcome:
    """Where one message ends (or goes back to): `status` reached from
    `only_from`; `record` False when nothing changes (reported as it is)."""

    row: Any
    status: str
    error: str | None = None
    only_from: str = "queued"
    record: bool = True
    delivery: Delivery | None = None
    attempts: list[Any] | None = None

    def event_properties(self) -> dict[str, Any]:
        """Properties of the message's `Email Sent` event."""
        row = self.row
        return {
            "message_id": str(row["id"]),
            "template_id": str(row["template_id"]),
            "campaign_id": row["campaign_id"],
            "provider": self.delivery.provider_kind if self.delivery else None,
            **({"topic": row["topic"]} if row["topic"] else {}),
        }

    def recordset(self) -> dict[str, Any]:
        """The outcome as a row of send_repository.RECORD_MANY_SQL."""
        delivery = self.delivery
        sent = self.status == "sent"
        return {
            "i": self.row["id"],
            "s": self.status,
            "e": self.error,
            "f": self.only_from,
            "pid": delivery.provider_id if delivery else None,
            "pk": delivery.provider_kind if delivery else None,
            "pm": delivery.provider_message_id if delivery else None,
            "a": _attempts(self.attempts) if self.attempts is not None else None,
            "ev": uuid7() if sent else None,
            "k": email_event_key(self.row["id"], "sent") if sent else None,
            "pr": self.event_properties() if sent else None,
        }

    def result(self) -> SendEmailResult:
        """The outcome as the activities report it."""
        row, delivery = self.row, self.delivery
        return SendEmailResult(
            message_id=row["id"],
            status=self.status,
            provider=delivery.provider_kind if delivery else row["provider_kind"],
            provider_message_id=delivery.provider_message_id if delivery else row["provider_message_id"],
            error=self.error,
        )
