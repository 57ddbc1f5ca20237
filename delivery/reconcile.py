"""Reconciliation: resolving sends an earlier attempt claimed and never
finished (the row is still `sending`: the worker was killed, or lost its
activity, while a provider was being called), by asking the provider
instead of guessing.

For each such message the verdict is one of:

- **found** — a provider accepted it: record `sent` with that provider's
  message id (and its `Email Sent` event, once: the record is a
  `sending` → `sent` transition).
- **missing** — no provider has it: it goes back to `queued` (only if the
  row is still the claim that was looked up) and is sent now.
- **waiting** — not decided yet: the claim is younger than the settle
  time, or a lookup failed for now (429, 5xx, timeout) or gave an
  incomplete answer. The row stays `sending`; the caller retries later.
- **unknown** — cannot be decided: a provider that the send may have
  reached has no lookup (MixMax, SES, SMTP), a lookup failed permanently
  (no Email Activity access), or lookups kept failing until the claim was
  `give_up` seconds old. Marked `unknown` and never sent again, as before
  reconciliation existed.

Any enabled provider may have been called (the router fails over after the
claim), so a message is only decided when every enabled provider can be
asked: found at one of them, or missing at all of them.

Why the settle time: a lookup that comes too early can miss a message the
provider did accept — an attempt that is not dead but slow may still be
calling (bounded by the providers' timeouts and rate-limit waits, which
the settle time is never shorter than), and the provider's own record may
not be queryable yet (SendGrid's Email Activity is eventually consistent).
Either would send the message twice. The residual risk is written down in
docs/architecture.md ("Reconciliation")."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from delivery.adapters.base import LookupFailed, LookupResult, ProviderLookup
from delivery.router import ProviderConfig, ProviderRouter

log = logging.getLogger(__name__)


@dataclass
class Verdicts:
    """Interrupted messages sorted by what to do with them (see the module)."""

    found: list[tuple[Any, ProviderConfig, str]] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)
    waiting: list[tuple[Any, str]] = field(default_factory=list)
    unknown: list[tuple[Any, str]] = field(default_factory=list)


class Reconciler:
    """Built once in the worker with the router (whose adapters it asks)."""

    def __init__(self, router: ProviderRouter, *, settle_seconds: float, give_up_seconds: float) -> None:
        self._router = router
        self._settle = settle_seconds
        self._give_up = give_up_seconds

    def settle_seconds(self, lookups: Sequence[ProviderLookup]) -> float:
        """How old a claim must be before it is looked up: the configured
        time, and never less than an attempt can still spend calling the
        providers after its claim (each one's rate-limit wait and timeout)."""
        attempt = sum(lookup.timeout + self._router.max_rate_wait for lookup in lookups)
        return max(self._settle, attempt)

    async def resolve(self, rows: Sequence[Any], providers: Sequence[ProviderConfig]) -> Verdicts:
        """Verdicts for `sending` rows (each with `id`, `email`, `claim_age`
        in seconds); one lookup call per provider for all settled rows."""
        verdicts = Verdicts()
        if not rows:
            return verdicts
        enabled = [p for p in providers if p.enabled]
        lookups = [(p, self._router.lookup(p)) for p in enabled]
        blind = [p.name for p, lookup in lookups if lookup is None]
        if blind or not lookups:
            why = (
                f"provider {', '.join(blind)} cannot be asked whether it accepted the message"
                if blind
                else "no enabled provider to ask whether it accepted the message"
            )
            verdicts.unknown = [(row, why) for row in rows]
            return verdicts
        askable = [(p, lookup) for p, lookup in lookups if lookup is not None]
        settle = self.settle_seconds([lookup for _, lookup in askable])
        due = []
        for row in rows:
            if row["claim_age"] < settle:
                verdicts.waiting.append(
                    (row, f"claimed {row['claim_age']:.0f}s ago; looked up after {settle:.0f}s")
                )
            else:
                due.append(row)
        if not due:
            return verdicts
        recipients = {row["id"]: row["email"] for row in due}
        answers: list[tuple[ProviderConfig, LookupResult]] = []
        failure: LookupFailed | None = None
        for provider, lookup in askable:
            # The next provider is asked only about what none has so far
            # (lookups are rate-limited: SendGrid's to a few a minute).
            if not recipients:
                break
            try:
                answer = await lookup.lookup(recipients)
            except LookupFailed as exc:
                log.warning("lookup at %s failed: %s", provider.name, exc.reason)
                failure = exc if failure is None or exc.permanent else failure
                continue
            answers.append((provider, answer))
            recipients = {m: address for m, address in recipients.items() if m not in answer.found}
        for row in due:
            self._judge(row, answers, len(askable), failure, verdicts)
        return verdicts

    def _judge(
        self,
        row: Any,
        answers: list[tuple[ProviderConfig, LookupResult]],
        asked: int,
        failure: LookupFailed | None,
        verdicts: Verdicts,
    ) -> None:
        message_id: uuid.UUID = row["id"]
        for provider, answer in answers:
            if message_id in answer.found:
                verdicts.found.append((row, provider, answer.found[message_id]))
                return
        # Missing only when every provider was asked about it and has it not.
        if failure is None and len(answers) == asked and all(message_id in a.missing for _, a in answers):
            verdicts.missing.append(row)
            return
        why = failure.reason if failure is not None else "the provider's answer was incomplete"
        if (failure is not None and failure.permanent) or row["claim_age"] >= self._give_up:
            verdicts.unknown.append((row, f"could not be looked up: {why}"[:1000]))
        else:
            verdicts.waiting.append((row, why))
