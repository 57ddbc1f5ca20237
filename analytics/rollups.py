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
from sqlalchemy.ext.asyncio import AsyncEngine

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
    events = slices = 0
    async with engine.begin() as conn:
        await repo.summarize_received_index(conn)
    async with engine.begin() as conn:
        hi = await repo.db_now(conn) - timedelta(seconds=lag_seconds)
        lo = await repo.watermark(conn, repo.EVENTS_WATERMARK)
        if lo is None:
            oldest = await repo.oldest_received(conn)
            lo = (oldest - timedelta(microseconds=1)) if oldest is not None else hi
            await repo.set_watermark(conn, repo.EVENTS_WATERMARK, min(lo, hi))
    while lo < hi:
        end = min(hi, lo + timedelta(hours=slice_hours))
        async with engine.begin() as conn:
            # Locked: a second pass running at once waits here, then re-reads.
            current = await repo.watermark(conn, repo.EVENTS_WATERMARK)
            if current is not None and current != lo:
                lo = current
                continue
            events += await repo.add_event_hours(conn, lo, end)
            await repo.add_property_counts(conn, lo, end)
            await repo.add_email_counts(conn, lo, end)
            await repo.add_active_days(conn, lo, end)
            await repo.set_watermark(conn, repo.EVENTS_WATERMARK, end)
        slices += 1
        lo = end
        await _beat(beat)
    await _funnel_slices(engine, hi, slice_hours, beat)

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


async def _funnel_slices(
    engine: AsyncEngine, hi: datetime, slice_hours: float, beat: Callable[[], Awaitable[None] | None]
) -> None:
    """The funnel rollups up to `hi`, from the `funnel` watermark (the
    oldest event on a first pass), a slice per transaction."""
    created = 0
    async with engine.begin() as conn:
        lo = await repo.watermark(conn, repo.FUNNEL_WATERMARK)
        if lo is None:
            oldest = await repo.oldest_received(conn)
            lo = (oldest - timedelta(microseconds=1)) if oldest is not None else hi
            await repo.set_watermark(conn, repo.FUNNEL_WATERMARK, min(lo, hi))
    while lo < hi:
        end = min(hi, lo + timedelta(hours=slice_hours))
        async with engine.begin() as conn:
            current = await repo.watermark(conn, repo.FUNNEL_WATERMARK)
            if current is not None and current != lo:
                lo = current
                continue
            created += await add_funnel_slice(conn, lo, end)
            await repo.set_watermark(conn, repo.FUNNEL_WATERMARK, end)
        lo = end
        await _beat(beat)
    if created >= ANALYZE_AFTER_ROWS:
        # A backfill: fresh statistics now rather than at autovacuum's pace.
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE analytics_funnel_days, analytics_profile_ordinals"))
            await conn.commit()
