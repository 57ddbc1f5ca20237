"""One pass of the analytics rollups (run by `AnalyticsRollupWorkflow`'s
activity on a Temporal Schedule, never on the tracking path).

Events: from the `events` watermark to `now() - lag`, in slices of at most
`slice_hours` of arrival time, each slice one transaction that adds its
counts and moves the watermark. The first pass starts at the oldest event
(a backfill); later passes read a minute or so of arrivals each.
Funnels (analytics/funnels.py): the same slices from their own watermark,
`funnel`, so an installation that had the other rollups before them
backfills them on its first pass. Profiles: new profiles since the
`profiles` watermark. Segment sizes: a sample per hour. Deleted events (an
erased profile) stay counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from analytics import rollup_repository as repo
from analytics.funnels import add_funnel_slice
from core.ids import uuid7_floor
from definitions.analytics import RollupResult

# A profile id more than this before the watermark is not looked at (ids are
# UUIDv7 of the creating clock; this covers clock skew between processes).
_ID_SLACK = timedelta(minutes=10)
# A pass that adds this many funnel rows (a backfill) analyzes their tables.
ANALYZE_AFTER_ROWS = 100_000


async def rollup_pass(
    engine: AsyncEngine,
    *,
    lag_seconds: float,
    slice_hours: float,
    beat: Callable[[], Awaitable[None] | None] = lambda: None,
) -> RollupResult:
    """Bring every rollup up to `now() - lag`; returns what it counted."""
    async with engine.begin() as conn:
        await repo.summarize_received_index(conn)
        hi = await repo.db_now(conn) - timedelta(seconds=lag_seconds)
    events, slices = await _slices(engine, repo.EVENTS_WATERMARK, hi, slice_hours, beat, _event_slice)
    created, _ = await _slices(engine, repo.FUNNEL_WATERMARK, hi, slice_hours, beat, add_funnel_slice)
    if created >= ANALYZE_AFTER_ROWS:
        # A backfill: fresh statistics now rather than at autovacuum's pace.
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE analytics_funnel_days, analytics_profile_ordinals"))
            await conn.commit()

    async with engine.begin() as conn:
        since = await repo.watermark(conn, repo.PROFILES_WATERMARK)
        floor = uuid7_floor(since - _ID_SLACK) if since is not None else None
        lo_p = since if since is not None else datetime.fromisoformat("1970-01-01T00:00:00+00:00")
        profiles = await repo.add_new_profiles(conn, lo_p, hi, floor) if lo_p < hi else 0
        await repo.set_watermark(conn, repo.PROFILES_WATERMARK, max(lo_p, hi))
        await repo.sample_segment_sizes(conn)
        await repo.prune_active_days(conn)
    return RollupResult(events=events, new_profiles=profiles, slices=slices, watermark=hi)


async def _beat(beat: Callable[[], Awaitable[None] | None]) -> None:
    result = beat()
    if result is not None:
        await result


async def _event_slice(conn: AsyncConnection, lo: datetime, end: datetime) -> int:
    """The event rollups of one slice; returns its events."""
    events = await repo.add_event_hours(conn, lo, end)
    await repo.add_property_counts(conn, lo, end)
    await repo.add_email_counts(conn, lo, end)
    await repo.add_active_days(conn, lo, end)
    return events


async def _slices(
    engine: AsyncEngine,
    mark: str,
    hi: datetime,
    slice_hours: float,
    beat: Callable[[], Awaitable[None] | None],
    step: Callable[[AsyncConnection, datetime, datetime], Awaitable[int]],
) -> tuple[int, int]:
    """Bring the rollups behind watermark `mark` up to `hi` (from the oldest
    event on a first pass), a slice of at most `slice_hours` per
    transaction: (what `step` counted, slices)."""
    async with engine.begin() as conn:
        lo = await repo.watermark(conn, mark)
        if lo is None:
            oldest = await repo.oldest_received(conn)
            lo = (oldest - timedelta(microseconds=1)) if oldest is not None else hi
            await repo.set_watermark(conn, mark, min(lo, hi))
    counted = slices = 0
    while lo < hi:
        end = min(hi, lo + timedelta(hours=slice_hours))
        async with engine.begin() as conn:
            # Locked: a second pass running at once waits here, then re-reads.
            current = await repo.watermark(conn, mark)
            if current is not None and current != lo:
                lo = current
                continue
            counted += await step(conn, lo, end)
            await repo.set_watermark(conn, mark, end)
        slices += 1
        lo = end
        await _beat(beat)
    return counted, slices
