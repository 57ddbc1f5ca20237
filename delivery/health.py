"""Provider health for the dashboard: priority, breaker state, failures in
the breaker window, rate-limit use (from Redis, read without side effects)
and the messages each provider failed in the last day (from PostgreSQL).
Credentials are never part of it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import as_outage
from delivery import repository as repo
from delivery.limits import ProviderLimits


class ProviderHealth(BaseModel):
    """One provider as the dashboard shows it (no secrets, no settings)."""

    id: uuid.UUID
    name: str
    kind: str
    priority: int
    enabled: bool
    rate_limit: float | None = Field(description="Sends per second allowed (null: unlimited).")
    breaker: str = Field(description="closed, open, half-open, or unknown (Redis unreachable).")
    failures_in_window: int
    retry_in_seconds: float | None
    rate_used: float | None = Field(description="Share of the rate-limit bucket in use now (0..1).")
    failed_last_day: int
    sent_last_day: int


async def provider_health(
    session: AsyncSession, workspace_id: uuid.UUID, limits: ProviderLimits
) -> list[ProviderHealth]:
    """Every provider of the workspace by priority, with its health."""
    since = datetime.now(UTC) - timedelta(days=1)
    rows = await repo.providers_by_priority(session, workspace_id)
    counts = await repo.message_outcomes_since(session, workspace_id, since)
    out = []
    for row in rows:
        try:
            snap = await limits.snapshot(row["id"])
        except Exception as exc:
            if as_outage(exc) is None:
                raise
            snap = {"state": "unknown", "failures": 0, "retry_in": None, "tokens": None}
        rate = row["rate_limit"]
        burst = max(1.0, rate) if rate else None
        used = None
        if burst and snap["tokens"] is not None:
            used = round(min(1.0, max(0.0, 1 - float(snap["tokens"]) / burst)), 3)
        sent, failed = counts.get(row["id"], (0, 0))
        out.append(
            ProviderHealth(
                id=row["id"],
                name=row["name"],
                kind=row["kind"],
                priority=row["priority"],
                enabled=row["enabled"],
                rate_limit=rate,
                breaker=str(snap["state"]),
                failures_in_window=int(snap["failures"] or 0),
                retry_in_seconds=snap["retry_in"],
                rate_used=used,
                failed_last_day=failed,
                sent_last_day=sent,
            )
        )
    return out
