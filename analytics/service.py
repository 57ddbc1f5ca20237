"""Analytics answers: time series, breakdowns, email engagement, profiles,
funnels and overview totals, read from the rollups (analytics/rollups.py,
analytics/funnels.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from analytics import repository as repo
from analytics.funnels import funnel_counts
from analytics.schemas import (
    EmailSeries,
    EventName,
    EventNames,
    EventSeries,
    Funnel,
    FunnelStep,
    Interval,
    Overview,
    Point,
    ProfileSeries,
    SegmentSizes,
    Series,
)
from core.errors import ValidationFailed

MAX_DAYS = 400
MAX_HOUR_BUCKETS = 24 * 31
MAX_FUNNEL_DAYS = 92
MAX_BREAKDOWN_VALUES = 8
EMAIL_KINDS = ("Sent", "Delivered", "Opened", "Clicked", "Bounced", "Complained", "Unsubscribed")
OTHER = "(other)"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _floor(at: datetime, interval: Interval) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if interval == "day" else at


def resolve_range(
    start: datetime | None, end: datetime | None, interval: Interval, *, default_days: int = 30
) -> tuple[datetime, datetime]:
    """[start, end) in UTC, aligned to the interval: end defaults to now
    (its bucket included), start to `default_days` before. ValidationFailed
    (naming the parameter) for an empty, reversed or too long range."""
    now = datetime.now(UTC)
    try:
        end_at = _utc(end) if end is not None else now
        start_at = _utc(start) if start is not None else end_at - timedelta(days=default_days)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValidationFailed([{"loc": "query.from", "msg": "date out of range"}]) from None
    for value, loc in ((start_at, "query.from"), (end_at, "query.to")):
        if not now - timedelta(days=365 * 20) <= value <= now + timedelta(days=366):
            raise ValidationFailed(
                [{"loc": loc, "msg": "must be within 20 years before and 1 year after now"}]
            )
    if start_at >= end_at:
        raise ValidationFailed([{"loc": "query.from", "msg": "must be before `to`"}])
    if end_at - start_at > timedelta(days=MAX_DAYS):
        raise ValidationFailed([{"loc": "query.from", "msg": f"a range spans at most {MAX_DAYS} days"}])
    step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
    lo = _floor(start_at, interval)
    hi = _floor(end_at, interval)
    if hi < end_at or hi == lo:
        hi += step
    if interval == "hour" and (hi - lo) / step > MAX_HOUR_BUCKETS:
        raise ValidationFailed(
            [{"loc": "query.interval", "msg": "hourly series span at most 31 days; use interval=day"}]
        )
    return lo, hi


def _buckets(start: datetime, end: datetime, interval: Interval) -> list[datetime]:
    step = timedelta(hours=1) if interval == "hour" else timedelta(days=1)
    out, at = [], start
    while at < end:
        out.append(at)
        at += step
    return out


def _series(label: str, buckets: list[datetime], rows: Iterable[Mapping]) -> Series:
    counts = {_utc(r["at"]): int(r["count"]) for r in rows}
    points = [Point(at=b, count=counts.get(b, 0)) for b in buckets]
    return Series(label=label, points=points, total=sum(p.count for p in points))


async def event_series(
    session: AsyncSession,
    ws: uuid.UUID,
    *,
    name: str | None,
    interval: Interval,
    start: datetime | None,
    end: datetime | None,
    breakdown: str | None = None,
) -> EventSeries:
    """Counts of an event (all events without a name) per bucket; with
    `breakdown`, a line per most frequent value of that property and one
    for the rest."""
    lo, hi = resolve_range(start, end, interval)
    if breakdown is not None and name is None:
        raise ValidationFailed([{"loc": "query.breakdown", "msg": "a breakdown needs an event name"}])
    buckets = _buckets(lo, hi, interval)
    total = _series(
        name or "All events", buckets, await repo.event_buckets(session, ws, name, interval, lo, hi)
    )
    lines: list[Series] = []
    if breakdown is not None and name is not None:
        values = await repo.top_values(session, ws, name, breakdown, lo, hi, MAX_BREAKDOWN_VALUES)
        rows = (
            await repo.value_buckets(session, ws, name, breakdown, values, interval, lo, hi) if values else []
        )
        by_value: dict[str, list] = {v: [] for v in values}
        for r in rows:
            by_value[r["value"]].append(r)
        lines = [_series(v, buckets, by_value[v]) for v in values]
        rest = [
            Point(at=p.at, count=max(0, p.count - sum(line.points[i].count for line in lines)))
            for i, p in enumerate(total.points)
        ]
        if any(p.count for p in rest):
            lines.append(Series(label=OTHER, points=rest, total=sum(p.count for p in rest)))
    return EventSeries(
        name=name,
        interval=interval,
        start=lo,
        end=hi,
        total=total,
        breakdown_by=breakdown,
        breakdown=lines,
        as_of=await repo.watermark(session),
    )


async def event_names(
    session: AsyncSession, ws: uuid.UUID, start: datetime | None, end: datetime | None, name: str | None
) -> EventNames:
    """Event names of the range by frequency (and the property keys of `name`)."""
    lo, hi = resolve_range(start, end, "day", default_days=90)
    rows = await repo.event_names(session, ws, lo, hi, 200)
    keys = await repo.property_keys(session, ws, name, 100) if name else []
    return EventNames(data=[EventName(name=r["name"], count=r["count"]) for r in rows], properties=keys)


async def email_series(
    session: AsyncSession,
    ws: uuid.UUID,
    *,
    interval: Interval,
    start: datetime | None,
    end: datetime | None,
    flow_id: uuid.UUID | None = None,
    provider: str | None = None,
    campaign_id: uuid.UUID | None = None,
) -> EmailSeries:
    """Email engagement per kind and bucket, optionally of one flow,
    campaign or provider (filters combine)."""
    lo, hi = resolve_range(start, end, interval)
    buckets = _buckets(lo, hi, interval)
    rows = await repo.email_buckets(session, ws, interval, lo, hi, flow_id, provider, campaign_id)
    by_kind: dict[str, list] = {}
    for r in rows:
        by_kind.setdefault(r["name"].removeprefix("Email "), []).append(r)
    kinds = [k for k in EMAIL_KINDS if k in by_kind or k in EMAIL_KINDS[:5]]
    kinds += sorted(k for k in by_kind if k not in kinds)
    series = [_series(k, buckets, by_kind.get(k, [])) for k in kinds]
    return EmailSeries(
        interval=interval,
        start=lo,
        end=hi,
        flow_id=flow_id,
        campaign_id=campaign_id,
        provider=provider,
        series=series,
        totals={s.label: s.total for s in series},
    )


async def profile_series(
    session: AsyncSession, ws: uuid.UUID, *, interval: Interval, start: datetime | None, end: datetime | None
) -> ProfileSeries:
    """New profiles per bucket, active profiles per day."""
    lo, hi = resolve_range(start, end, interval)
    buckets = _buckets(lo, hi, interval)
    new = _series("New profiles", buckets, await repo.new_profile_buckets(session, ws, interval, lo, hi))
    days = _buckets(
        _floor(lo, "day"), hi if interval == "day" else _floor(hi, "day") + timedelta(days=1), "day"
    )
    active_rows = [
        {"at": datetime.combine(r["day"], time(), UTC), "count": r["count"]}
        for r in await repo.active_days(session, ws, lo, hi)
    ]
    active = _series("Active profiles", days, active_rows)
    return ProfileSeries(interval=interval, start=lo, end=hi, new_profiles=new, active_profiles=active)


async def funnel(
    session: AsyncSession,
    ws: uuid.UUID,
    *,
    steps: list[str],
    window_hours: int,
    start: datetime | None,
    end: datetime | None,
) -> Funnel:
    """Conversion through ordered steps (2 to 6) within a window, from the
    funnel rollups (semantics in analytics/funnels.py)."""
    steps = [s.strip() for s in steps if s and s.strip()]
    if not 2 <= len(steps) <= 6:
        raise ValidationFailed([{"loc": "query.steps", "msg": "give 2 to 6 event names, in order"}])
    if any(len(s) > 200 for s in steps):
        raise ValidationFailed([{"loc": "query.steps", "msg": "an event name is at most 200 characters"}])
    lo, hi = resolve_range(start, end, "day")
    if hi - lo > timedelta(days=MAX_FUNNEL_DAYS):
        raise ValidationFailed(
            [{"loc": "query.from", "msg": f"a funnel spans at most {MAX_FUNNEL_DAYS} days"}]
        )
    counts = await funnel_counts(session, ws, steps, lo, hi, window_hours * 3600)
    first = counts[0] or 0
    out = []
    for i, (name, count) in enumerate(zip(steps, counts, strict=True)):
        prev = counts[i - 1] if i else count
        out.append(
            FunnelStep(
                name=name,
                count=count,
                conversion_from_previous=round(count / prev, 4) if prev else 0.0,
                conversion_from_first=round(count / first, 4) if first else 0.0,
            )
        )
    return Funnel(
        start=lo, end=hi, window_hours=window_hours, steps=out, as_of=await repo.watermark(session, "funnel")
    )


async def overview(
    session: AsyncSession, ws: uuid.UUID, *, start: datetime | None, end: datetime | None
) -> Overview:
    """Totals of the range."""
    lo, hi = resolve_range(start, end, "day")
    events = await repo.event_buckets(session, ws, None, "day", lo, hi)
    new = await repo.new_profile_buckets(session, ws, "day", lo, hi)
    emails = await repo.email_buckets(session, ws, "day", lo, hi, None, None)
    totals = {kind: 0 for kind in EMAIL_KINDS[:5]}
    for r in emails:
        kind = r["name"].removeprefix("Email ")
        totals[kind] = totals.get(kind, 0) + int(r["count"])
    return Overview(
        start=lo,
        end=hi,
        events=sum(int(r["count"]) for r in events),
        new_profiles=sum(int(r["count"]) for r in new),
        active_profiles_today=await active_today(session, ws),
        emails=totals,
        running_flows=await repo.running_flows(session, ws),
        as_of=await repo.watermark(session),
    )


async def active_today(session: AsyncSession, ws: uuid.UUID) -> int:
    """Distinct profiles with an event today (UTC)."""
    today = _floor(datetime.now(UTC), "day")
    rows = await repo.active_days(session, ws, today, today + timedelta(days=1))
    return int(rows[-1]["count"]) if rows else 0


async def status(session: AsyncSession, ws: uuid.UUID) -> tuple[int, int, datetime | None]:
    """(active profiles today, running flows, rollups as of): what the
    overview page shows beside the series it already has."""
    return (
        await active_today(session, ws),
        await repo.running_flows(session, ws),
        await repo.watermark(session),
    )


async def segment_sizes(
    session: AsyncSession, ws: uuid.UUID, segment_ids: list[uuid.UUID], days: int = 30
) -> dict[uuid.UUID, SegmentSizes]:
    """Member counts over the last `days`, per segment (segments of the workspace only)."""
    since = datetime.now(UTC) - timedelta(days=days)
    out = {sid: SegmentSizes(segment_id=sid, points=[]) for sid in segment_ids}
    for r in await repo.segment_sizes(session, ws, segment_ids, since):
        out[r["segment_id"]].points.append(Point(at=_utc(r["at"]), count=int(r["count"])))
    return out
