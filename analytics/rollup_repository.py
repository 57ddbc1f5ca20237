"""SQL that keeps the analytics rollups current.

Each pass reads only `events` rows whose `received_at` lies between the
watermark and a bound a little in the past (BRIN index
`events_received_brin`), adds their counts to the hourly tables and moves
the watermark, all in one transaction: a pass that fails changes nothing,
and a pass never counts a row twice. Rows committed more than
`lag` after their `received_at` would be missed; the bound stays `lag`
behind `now()` for that reason.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

EVENTS_WATERMARK = "events"
PROFILES_WATERMARK = "profiles"
# The funnel rollups (analytics/funnels.py) move on their own watermark.
FUNNEL_WATERMARK = "funnel"
# The day before which `analytics_active_days` was last pruned: pruning
# scans the whole set (no index on the day alone), so it runs once a day.
PRUNED_WATERMARK = "active_days_pruned"

# Property values longer than this are left out of the breakdown rollup
# (ids, URLs with query strings: nobody breaks a chart down by them).
MAX_VALUE_CHARS = 100
# Who was active on which day is remembered this long (to count each
# profile once per day); events arriving later than that for an older day
# are not counted as activity.
ACTIVE_DAYS_KEPT = 32

_UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_WINDOW = "e.received_at > :lo AND e.received_at <= :hi"


async def db_now(conn: AsyncConnection) -> datetime:
    """The database's clock (every bound is taken from it, not the worker's)."""
    return (await conn.execute(text("SELECT now()"))).scalar_one()


async def watermark(conn: AsyncConnection, name: str) -> datetime | None:
    """Where the rollup named `name` stands, locked for this transaction."""
    row = await conn.execute(
        text("SELECT value FROM analytics_watermarks WHERE name = :name FOR UPDATE"), {"name": name}
    )
    return row.scalar_one_or_none()


async def set_watermark(conn: AsyncConnection, name: str, value: datetime) -> None:
    """Move a watermark (created on first use)."""
    await conn.execute(
        text(
            "INSERT INTO analytics_watermarks (name, value) VALUES (:name, :value) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        ),
        {"name": name, "value": value},
    )


async def oldest_received(conn: AsyncConnection) -> datetime | None:
    """The first `received_at` of all events (a first pass starts there; one scan, once)."""
    return (await conn.execute(text("SELECT min(received_at) FROM events"))).scalar_one()


async def add_event_hours(conn: AsyncConnection, lo: datetime, hi: datetime) -> int:
    """Event counts per workspace, name and hour of `occurred_at`; returns events counted."""
    result = await conn.execute(
        text(
            f"""
            WITH agg AS (
                SELECT e.workspace_id, e.name, date_trunc('hour', e.occurred_at, 'UTC') AS hour, count(*) AS n
                FROM events e WHERE {_WINDOW}
                GROUP BY 1, 2, 3
            ), stored AS (
                INSERT INTO analytics_event_hours AS t (workspace_id, name, hour, count)
                SELECT workspace_id, name, hour, n FROM agg
                ON CONFLICT (workspace_id, name, hour) DO UPDATE SET count = t.count + EXCLUDED.count
            )
            SELECT coalesce(sum(n), 0) FROM agg
            """
        ),
        {"lo": lo, "hi": hi},
    )
    return int(result.scalar_one())


async def add_property_counts(conn: AsyncConnection, lo: datetime, hi: datetime) -> None:
    """Counts per top-level string or boolean property value (up to
    MAX_VALUE_CHARS), per event name, by hour and by day: what a breakdown
    reads. One scan of the slice's properties feeds both tables."""
    await conn.execute(
        text(
            f"""
            WITH agg AS (
                SELECT e.workspace_id, e.name, p.key, p.value #>> '{{}}' AS value,
                       date_trunc('hour', e.occurred_at, 'UTC') AS hour, count(*) AS n
                FROM events e, jsonb_each(e.properties) p
                WHERE {_WINDOW}
                  AND jsonb_typeof(e.properties) = 'object'
                  AND jsonb_typeof(p.value) IN ('string', 'boolean')
                  AND length(p.key) <= {MAX_VALUE_CHARS}
                  AND length(p.value #>> '{{}}') <= {MAX_VALUE_CHARS}
                GROUP BY 1, 2, 3, 4, 5
            ), hourly AS (
                INSERT INTO analytics_property_hours AS t (workspace_id, name, key, value, hour, count)
                SELECT workspace_id, name, key, value, hour, n FROM agg
                ON CONFLICT (workspace_id, name, key, hour, value)
                DO UPDATE SET count = t.count + EXCLUDED.count
            )
            INSERT INTO analytics_property_days AS t (workspace_id, name, key, value, day, count)
            SELECT workspace_id, name, key, value, (hour AT TIME ZONE 'UTC')::date, sum(n) FROM agg
            GROUP BY 1, 2, 3, 4, 5
            ON CONFLICT (workspace_id, name, key, day, value) DO UPDATE SET count = t.count + EXCLUDED.count
            """
        ),
        {"lo": lo, "hi": hi},
    )


async def add_email_counts(conn: AsyncConnection, lo: datetime, hi: datetime) -> None:
    """`Email …` events by hour and by day, with the flow, campaign and
    provider of their message (from `messages`, else the event's own properties)."""
    await conn.execute(
        text(
            f"""
            WITH agg AS (
                SELECT e.workspace_id, date_trunc('hour', e.occurred_at, 'UTC') AS hour, e.name,
                       coalesce(m.flow_id::text, '') AS flow_id,
                       left(coalesce(m.campaign_id, e.properties ->> 'campaign_id', ''), 200) AS campaign_id,
                       left(coalesce(m.provider_kind, e.properties ->> 'provider', ''), 100) AS provider,
                       count(*) AS n
                FROM events e
                LEFT JOIN messages m
                  ON m.workspace_id = e.workspace_id
                 AND m.id = CASE WHEN e.properties ->> 'message_id' ~* '{_UUID_PATTERN}'
                                 THEN (e.properties ->> 'message_id')::uuid END
                WHERE {_WINDOW} AND e.name LIKE 'Email %'
                GROUP BY 1, 2, 3, 4, 5, 6
            ), hourly AS (
                INSERT INTO analytics_email_hours AS t
                    (workspace_id, hour, name, flow_id, campaign_id, provider, count)
                SELECT workspace_id, hour, name, flow_id, campaign_id, provider, n FROM agg
                ON CONFLICT (workspace_id, hour, name, flow_id, campaign_id, provider)
                DO UPDATE SET count = t.count + EXCLUDED.count
            )
            INSERT INTO analytics_email_days AS t
                (workspace_id, day, name, flow_id, campaign_id, provider, count)
            SELECT workspace_id, (hour AT TIME ZONE 'UTC')::date, name, flow_id, campaign_id, provider, sum(n)
            FROM agg GROUP BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (workspace_id, day, name, flow_id, campaign_id, provider)
            DO UPDATE SET count = t.count + EXCLUDED.count
            """
        ),
        {"lo": lo, "hi": hi},
    )


async def summarize_received_index(conn: AsyncConnection) -> None:
    """Summarize the BRIN ranges of `events.received_at` that filled since
    the last pass (autosummarize does it too, but later): unsummarized
    ranges are read by every pass, which after a bulk load is all of them."""
    await conn.execute(
        text(
            "SELECT brin_summarize_new_values(i.inhrelid) FROM pg_inherits i "
            "WHERE i.inhparent = 'events_received_brin'::regclass"
        )
    )


async def add_active_days(conn: AsyncConnection, lo: datetime, hi: datetime) -> None:
    """Remember who was active on which (UTC) day, and count each profile
    once per day: only the rows this pass newly remembered are added."""
    await conn.execute(
        text(
            f"""
            WITH fresh AS (
                INSERT INTO analytics_active_days (workspace_id, day, profile_id)
                SELECT DISTINCT e.workspace_id, (e.occurred_at AT TIME ZONE 'UTC')::date, e.profile_id
                FROM events e
                WHERE {_WINDOW}
                  AND e.occurred_at >= now() - make_interval(days => {ACTIVE_DAYS_KEPT})
                  AND e.occurred_at <= now() + interval '1 day'
                ON CONFLICT DO NOTHING
                RETURNING workspace_id, day
            )
            INSERT INTO analytics_active_counts AS t (workspace_id, day, profiles)
            SELECT workspace_id, day, count(*) FROM fresh GROUP BY 1, 2
            ON CONFLICT (workspace_id, day) DO UPDATE SET profiles = t.profiles + EXCLUDED.profiles
            """
        ),
        {"lo": lo, "hi": hi},
    )


async def prune_active_days(conn: AsyncConnection) -> bool:
    """Forget who was active on days older than ACTIVE_DAYS_KEPT (their
    counts stay), at most once per day; True when it pruned."""
    cutoff = (
        await conn.execute(
            text(f"SELECT date_trunc('day', now(), 'UTC') - make_interval(days => {ACTIVE_DAYS_KEPT})")
        )
    ).scalar_one()
    last = await watermark(conn, PRUNED_WATERMARK)
    if last is not None and last >= cutoff:
        return False
    await conn.execute(
        text(
            "DELETE FROM analytics_active_days "
            "WHERE day < (CAST(:cutoff AS timestamptz) AT TIME ZONE 'UTC')::date"
        ),
        {"cutoff": cutoff},
    )
    await set_watermark(conn, PRUNED_WATERMARK, cutoff)
    return True


async def add_new_profiles(
    conn: AsyncConnection, lo: datetime, hi: datetime, id_floor: uuid.UUID | None
) -> int:
    """Profiles created in (lo, hi], per workspace and hour; returns how
    many. Profile ids are UUIDv7 (time first), so `id_floor` — the id of a
    moment safely before `lo` — keeps a pass to an index range instead of a
    scan of every profile."""
    floor = "AND id >= :floor" if id_floor is not None else ""
    result = await conn.execute(
        text(
            f"""
            WITH agg AS (
                SELECT workspace_id, date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS n
                FROM profiles
                WHERE created_at > :lo AND created_at <= :hi {floor}
                GROUP BY 1, 2
            ), stored AS (
                INSERT INTO analytics_profile_hours AS t (workspace_id, hour, new_profiles)
                SELECT workspace_id, hour, n FROM agg
                ON CONFLICT (workspace_id, hour)
                DO UPDATE SET new_profiles = t.new_profiles + EXCLUDED.new_profiles
            )
            SELECT coalesce(sum(n), 0) FROM agg
            """
        ),
        {"lo": lo, "hi": hi, "floor": id_floor},
    )
    return int(result.scalar_one())


async def sample_segment_sizes(conn: AsyncConnection) -> None:
    """This hour's member count of every computed segment (the last sample of an hour wins)."""
    await conn.execute(
        text(
            """
            INSERT INTO analytics_segment_sizes AS t (segment_id, hour, workspace_id, member_count)
            SELECT id, date_trunc('hour', now(), 'UTC'), workspace_id, member_count
            FROM segments WHERE member_count IS NOT NULL
            ON CONFLICT (segment_id, hour) DO UPDATE SET member_count = EXCLUDED.member_count
            """
        )
    )
