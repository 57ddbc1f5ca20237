"""Reads of the analytics rollups. Every statement filters on the
workspace and a time range that the service has already bounded.
`funnel_from_events` is the definition funnels (analytics/funnels.py) are
tested against, not what the API reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

Conn = AsyncSession | AsyncConnection


async def _rows(conn: Conn, sql: str, params: dict) -> Sequence[RowMapping]:
    return (await conn.execute(text(sql), params)).mappings().all()


def _grain(interval: str, hourly: str, daily: str) -> tuple[str, str, str]:
    """(table, its time column, the bucket expression): day series read the
    daily rollup (24 times fewer rows), hour series the hourly one."""
    if interval == "day":
        return daily, "day", "(day::timestamp AT TIME ZONE 'UTC')"
    return hourly, "hour", "hour"


async def event_buckets(
    conn: Conn, ws: uuid.UUID, name: str | None, interval: str, start: datetime, end: datetime
) -> Sequence[RowMapping]:
    """(at, count) per bucket with events, of one name or of all."""
    where = "AND name = :name" if name is not None else ""
    return await _rows(
        conn,
        f"""
        SELECT date_trunc(:interval, hour, 'UTC') AS at, sum(count)::bigint AS count
        FROM analytics_event_hours
        WHERE workspace_id = :ws AND hour >= :start AND hour < :end {where}
        GROUP BY 1 ORDER BY 1
        """,
        {"ws": ws, "name": name, "interval": interval, "start": start, "end": end},
    )


async def top_values(
    conn: Conn, ws: uuid.UUID, name: str, key: str, start: datetime, end: datetime, limit: int
) -> list[str]:
    """The most frequent values of a property of an event in the range (day-aligned ranges read days)."""
    aligned = start.hour == 0 and end.hour == 0 and start.minute == 0 and end.minute == 0
    table, column, _ = _grain(
        "day" if aligned else "hour", "analytics_property_hours", "analytics_property_days"
    )
    lo, hi = (start.date(), end.date()) if aligned else (start, end)
    rows = await _rows(
        conn,
        f"""
        SELECT value FROM {table}
        WHERE workspace_id = :ws AND name = :name AND key = :key AND {column} >= :start AND {column} < :end
        GROUP BY value ORDER BY sum(count) DESC, value LIMIT :limit
        """,
        {"ws": ws, "name": name, "key": key, "start": lo, "end": hi, "limit": limit},
    )
    return [r["value"] for r in rows]


async def value_buckets(
    conn: Conn,
    ws: uuid.UUID,
    name: str,
    key: str,
    values: list[str],
    interval: str,
    start: datetime,
    end: datetime,
) -> Sequence[RowMapping]:
    """(value, at, count) for the given values of a property."""
    table, column, bucket = _grain(interval, "analytics_property_hours", "analytics_property_days")
    lo, hi = (start.date(), end.date()) if interval == "day" else (start, end)
    return await _rows(
        conn,
        f"""
        SELECT value, {bucket} AS at, sum(count)::bigint AS count
        FROM {table}
        WHERE workspace_id = :ws AND name = :name AND key = :key AND {column} >= :start AND {column} < :end
          AND value = ANY(:values)
        GROUP BY 1, 2 ORDER BY 2
        """,
        {"ws": ws, "name": name, "key": key, "values": values, "start": lo, "end": hi},
    )


async def event_names(
    conn: Conn, ws: uuid.UUID, start: datetime, end: datetime, limit: int
) -> Sequence[RowMapping]:
    """Event names of the range, most frequent first."""
    return await _rows(
        conn,
        """
        SELECT name, sum(count)::bigint AS count FROM analytics_event_hours
        WHERE workspace_id = :ws AND hour >= :start AND hour < :end
        GROUP BY name ORDER BY 2 DESC, name LIMIT :limit
        """,
        {"ws": ws, "start": start, "end": end, "limit": limit},
    )


async def property_keys(conn: Conn, ws: uuid.UUID, name: str, limit: int) -> list[str]:
    """Property keys ever rolled up for an event: a loose index scan of the
    primary key (one probe per key, not a read of every row)."""
    rows = await _rows(
        conn,
        """
        WITH RECURSIVE k AS (
            SELECT min(key) AS key FROM analytics_property_hours WHERE workspace_id = :ws AND name = :name
            UNION ALL
            SELECT (SELECT min(key) FROM analytics_property_hours
                    WHERE workspace_id = :ws AND name = :name AND key > k.key)
            FROM k WHERE k.key IS NOT NULL
        )
        SELECT key FROM k WHERE key IS NOT NULL LIMIT :limit
        """,
        {"ws": ws, "name": name, "limit": limit},
    )
    return [r["key"] for r in rows]


async def email_buckets(
    conn: Conn,
    ws: uuid.UUID,
    interval: str,
    start: datetime,
    end: datetime,
    flow_id: uuid.UUID | None,
    provider: str | None,
    campaign_id: uuid.UUID | None = None,
) -> Sequence[RowMapping]:
    """(name, at, count) of `Email …` events, optionally of one flow,
    campaign or provider."""
    table, column, bucket = _grain(interval, "analytics_email_hours", "analytics_email_days")
    lo, hi = (start.date(), end.date()) if interval == "day" else (start, end)
    where = ""
    if flow_id is not None:
        where += " AND flow_id = :flow"
    if campaign_id is not None:
        where += " AND campaign_id = :campaign"
    if provider is not None:
        where += " AND provider = :provider"
    return await _rows(
        conn,
        f"""
        SELECT name, {bucket} AS at, sum(count)::bigint AS count
        FROM {table}
        WHERE workspace_id = :ws AND {column} >= :start AND {column} < :end {where}
        GROUP BY 1, 2 ORDER BY 2
        """,
        {
            "ws": ws,
            "start": lo,
            "end": hi,
            "flow": str(flow_id) if flow_id else None,
            "campaign": str(campaign_id) if campaign_id else None,
            "provider": provider,
        },
    )


async def new_profile_buckets(
    conn: Conn, ws: uuid.UUID, interval: str, start: datetime, end: datetime
) -> Sequence[RowMapping]:
    """(at, count) of profiles created per bucket."""
    return await _rows(
        conn,
        """
        SELECT date_trunc(:interval, hour, 'UTC') AS at, sum(new_profiles)::bigint AS count
        FROM analytics_profile_hours
        WHERE workspace_id = :ws AND hour >= :start AND hour < :end
        GROUP BY 1 ORDER BY 1
        """,
        {"ws": ws, "interval": interval, "start": start, "end": end},
    )


async def active_days(conn: Conn, ws: uuid.UUID, start: datetime, end: datetime) -> Sequence[RowMapping]:
    """(day, count) of distinct active profiles per UTC day."""
    return await _rows(
        conn,
        """
        SELECT day, profiles AS count FROM analytics_active_counts
        WHERE workspace_id = :ws AND day >= (:start AT TIME ZONE 'UTC')::date
          AND day < (:end AT TIME ZONE 'UTC')::date + 1
        ORDER BY day
        """,
        {"ws": ws, "start": start, "end": end},
    )


async def segment_sizes(
    conn: Conn, ws: uuid.UUID, segment_ids: list[uuid.UUID], start: datetime
) -> Sequence[RowMapping]:
    """(segment_id, at, count) samples since `start`."""
    return await _rows(
        conn,
        """
        SELECT segment_id, hour AS at, member_count AS count FROM analytics_segment_sizes
        WHERE workspace_id = :ws AND segment_id = ANY(:ids) AND hour >= :start
        ORDER BY segment_id, hour
        """,
        {"ws": ws, "ids": segment_ids, "start": start},
    )


async def watermark(conn: Conn, name: str = "events") -> datetime | None:
    """Events received up to this time are in the rollups (`funnel`: in the funnel rollups)."""
    return (
        await conn.execute(text("SELECT value FROM analytics_watermarks WHERE name = :name"), {"name": name})
    ).scalar_one_or_none()


async def running_flows(conn: Conn, ws: uuid.UUID) -> int:
    """Flows that are active now."""
    return (
        await conn.execute(
            text("SELECT count(*) FROM flows WHERE workspace_id = :ws AND status = 'active'"), {"ws": ws}
        )
    ).scalar_one()


async def funnel_from_events(
    conn: AsyncSession, ws: uuid.UUID, steps: list[str], start: datetime, end: datetime, window_seconds: int
) -> list[int]:
    """Profiles reaching each step, read from `events`: first step in
    [start, end), each next step after the previous one and within the
    window of the first. Grows with events (seconds at 10M): the reference
    the funnel rollups are tested against, not an answer for requests."""
    params: dict = {"ws": ws, "start": start, "end": end, "window": window_seconds}
    ctes = [
        """s0 AS (
            SELECT profile_id, min(occurred_at) AS t, min(occurred_at) AS t0 FROM events
            WHERE workspace_id = :ws AND name = :n0 AND occurred_at >= :start AND occurred_at < :end
            GROUP BY profile_id)"""
    ]
    params["n0"] = steps[0]
    for i, step in enumerate(steps[1:], start=1):
        params[f"n{i}"] = step
        ctes.append(
            f"""s{i} AS (
            SELECT p.profile_id, min(e.occurred_at) AS t, min(p.t0) AS t0
            FROM s{i - 1} p JOIN events e
              ON e.workspace_id = :ws AND e.profile_id = p.profile_id AND e.name = :n{i}
             AND e.occurred_at > p.t AND e.occurred_at <= p.t0 + make_interval(secs => :window)
             AND e.occurred_at >= :start
             AND e.occurred_at < CAST(:end AS timestamptz) + make_interval(secs => :window)
            GROUP BY p.profile_id)"""
        )
    counts = ", ".join(f"(SELECT count(*) FROM s{i})" for i in range(len(steps)))
    row = (await conn.execute(text(f"WITH {', '.join(ctes)} SELECT {counts}"), params)).one()
    return [int(v) for v in row]
