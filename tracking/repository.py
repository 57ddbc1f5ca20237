"""SQL of the ingestion path (raw asyncpg: one statement per step per group).

Every statement takes whole arrays so a group commit of thousands of events
costs a handful of round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from tracking.identity import PlannedProfile
from tracking.items import IngestItem

LOOKUP_SQL = """
SELECT 'u', p.workspace_id, p.external_id, p.id, p.email::text, p.external_id
FROM unnest($1::uuid[], $2::text[]) AS q(ws, k)
JOIN profiles p ON p.workspace_id = q.ws AND p.external_id = q.k
UNION ALL
SELECT 'e', p.workspace_id, lower(p.email::text), p.id, p.email::text, p.external_id
FROM unnest($3::uuid[], $4::citext[]) AS q(ws, k)
JOIN profiles p ON p.workspace_id = q.ws AND p.email = q.k
UNION ALL
SELECT 'a', a.workspace_id, a.anonymous_id, p.id, p.email::text, p.external_id
FROM unnest($5::uuid[], $6::text[]) AS q(ws, k)
JOIN profile_aliases a ON a.workspace_id = q.ws AND a.anonymous_id = q.k
JOIN profiles p ON p.id = a.profile_id
"""

# New profiles are inserted without their email / external id; those are
# set with every other identity change at the end (see writer), so that
# no ordering of creations, merges and renames trips a unique constraint.
INSERT_PROFILES_SQL = """
INSERT INTO profiles (id, workspace_id, traits, first_seen, last_seen)
SELECT t.id, t.ws, t.traits::jsonb, COALESCE(t.fs, now()), COALESCE(t.ls, now())
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS t(id, ws, traits, fs, ls)
"""

# Locks every existing profile the plan relies on (in id order, so two
# group commits never deadlock on each other) and returns their identity to
# compare with what the plan read.
LOCK_PROFILES_SQL = """
UPDATE profiles p
SET first_seen = LEAST(p.first_seen, v.fs), last_seen = GREATEST(p.last_seen, v.ls)
FROM (
    SELECT t.id, t.fs, t.ls FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS t(id, fs, ls)
    ORDER BY t.id
) v
WHERE p.id = v.id
RETURNING p.id, lower(p.email::text), p.external_id
"""

MOVE_EVENTS_SQL = "UPDATE events SET profile_id = $3 WHERE workspace_id = $1 AND profile_id = $2"
MOVE_ALIASES_SQL = "UPDATE profile_aliases SET profile_id = $3 WHERE workspace_id = $1 AND profile_id = $2"
ABSORB_PROFILE_SQL = """
WITH source AS (
    DELETE FROM profiles WHERE workspace_id = $1 AND id = $2 RETURNING traits, first_seen, last_seen
)
UPDATE profiles t
SET traits = source.traits || t.traits,
    first_seen = LEAST(t.first_seen, source.first_seen),
    last_seen = GREATEST(t.last_seen, source.last_seen),
    updated_at = now()
FROM source WHERE t.id = $3
"""

UPSERT_ALIASES_SQL = """
INSERT INTO profile_aliases (workspace_id, anonymous_id, profile_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[])
ON CONFLICT (workspace_id, anonymous_id) DO UPDATE SET profile_id = EXCLUDED.profile_id
"""

CLEAR_IDENTITIES_SQL = "UPDATE profiles SET email = NULL, external_id = NULL WHERE id = ANY($1::uuid[])"

UPDATE_PROFILES_SQL = """
UPDATE profiles p
SET email = CASE WHEN v.set_identity THEN v.email ELSE p.email END,
    external_id = CASE WHEN v.set_identity THEN v.ext ELSE p.external_id END,
    traits = CASE WHEN v.traits IS NULL THEN p.traits ELSE p.traits || v.traits::jsonb END,
    updated_at = now()
FROM unnest($1::uuid[], $2::bool[], $3::citext[], $4::text[], $5::text[]) AS v(id, set_identity, email, ext, traits)
WHERE p.id = v.id
"""

INSERT_EVENTS_SQL = """
INSERT INTO events (id, workspace_id, profile_id, type, name, properties, context, occurred_at, received_at, message_id)
SELECT t.id, t.ws, t.pid, t.type, t.name, t.props::jsonb, t.ctx::jsonb, t.occ, t.rec, t.mid
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::timestamptz[], $10::text[])
    AS t(id, ws, pid, type, name, props, ctx, occ, rec, mid)
ON CONFLICT DO NOTHING
RETURNING id
"""


async def lookup_identities(conn: asyncpg.Connection, items: Sequence[IngestItem]) -> list[Any]:
    """Profiles that hold any user id, email or anonymous id of the items."""
    ext: set[tuple[uuid.UUID, str]] = set()
    emails: set[tuple[uuid.UUID, str]] = set()
    anon: set[tuple[uuid.UUID, str]] = set()
    for item in items:
        ws = item.workspace_id
        if item.user_id:
            ext.add((ws, item.user_id))
        if item.email:
            emails.add((ws, item.email))
        if item.anonymous_id:
            anon.add((ws, item.anonymous_id))
        if item.previous_id:
            ext.add((ws, item.previous_id))
            anon.add((ws, item.previous_id))
    return await conn.fetch(
        LOOKUP_SQL,
        [w for w, _ in ext], [k for _, k in ext],
        [w for w, _ in emails], [k for _, k in emails],
        [w for w, _ in anon], [k for _, k in anon],
    )


def _traits_json(traits: dict[str, Any] | None) -> str | None:
    return orjson.dumps(traits).decode() if traits else None


async def insert_profiles(
    conn: asyncpg.Connection, profiles: Sequence[PlannedProfile], seen: dict[uuid.UUID, tuple[datetime, datetime]]
) -> None:
    """Insert new profiles (identity columns are set by `set_identities`)."""
    if not profiles:
        return
    await conn.execute(
        INSERT_PROFILES_SQL,
        [p.id for p in profiles],
        [p.workspace_id for p in profiles],
        [_traits_json(p.traits) or "{}" for p in profiles],
        [seen[p.id][0] if p.id in seen else None for p in profiles],
        [seen[p.id][1] if p.id in seen else None for p in profiles],
    )


async def lock_profiles(
    conn: asyncpg.Connection, ids: Sequence[uuid.UUID], seen: dict[uuid.UUID, tuple[datetime, datetime]]
) -> dict[uuid.UUID, tuple[str | None, str | None]]:
    """Lock existing profiles and record when they were seen; returns their
    current (email, external_id)."""
    if not ids:
        return {}
    rows = await conn.fetch(
        LOCK_PROFILES_SQL,
        list(ids),
        [seen[i][0] if i in seen else None for i in ids],
        [seen[i][1] if i in seen else None for i in ids],
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def merge_profile(conn: asyncpg.Connection, ws: uuid.UUID, source: uuid.UUID, target: uuid.UUID) -> None:
    """Move a profile's events and aliases to another, merge traits (the
    target's win), and delete it."""
    await conn.execute(MOVE_EVENTS_SQL, ws, source, target)
    await conn.execute(MOVE_ALIASES_SQL, ws, source, target)
    await conn.execute(ABSORB_PROFILE_SQL, ws, source, target)


async def upsert_aliases(conn: asyncpg.Connection, aliases: dict[tuple[uuid.UUID, str], uuid.UUID]) -> None:
    """Point anonymous ids at profiles."""
    if not aliases:
        return
    keys = list(aliases)
    await conn.execute(UPSERT_ALIASES_SQL, [k[0] for k in keys], [k[1] for k in keys], [aliases[k] for k in keys])


async def update_profiles(
    conn: asyncpg.Connection, profiles: Sequence[PlannedProfile], created: Sequence[PlannedProfile]
) -> None:
    """Set final identities (new profiles, renames, emails taken over) and
    merge identify traits into existing profiles. Changed identities are
    cleared first, so swaps and hand-overs never collide mid-statement; a
    value held by a profile outside the plan (a concurrent writer) raises
    UniqueViolationError and the group is retried."""
    changed = [p.id for p in profiles if p.identity_changed]
    if changed:
        await conn.execute(CLEAR_IDENTITIES_SQL, changed)
    rows = [(p, p.identity_changed, p.traits) for p in profiles]
    rows += [(p, True, None) for p in created if p.email is not None or p.external_id is not None]
    if not rows:
        return
    await conn.execute(
        UPDATE_PROFILES_SQL,
        [p.id for p, _, _ in rows],
        [flag for _, flag, _ in rows],
        [p.email for p, _, _ in rows],
        [p.external_id for p, _, _ in rows],
        [_traits_json(traits) for _, _, traits in rows],
    )


async def insert_events(conn: asyncpg.Connection, items: Sequence[IngestItem]) -> set[uuid.UUID]:
    """Insert the events of the items; returns the ids actually stored
    (a duplicate messageId is skipped)."""
    events = [i for i in items if i.event_name is not None]
    if not events:
        return set()
    rows = await conn.fetch(
        INSERT_EVENTS_SQL,
        [i.event_id for i in events],
        [i.workspace_id for i in events],
        [i.profile_id for i in events],
        [i.event_type for i in events],
        [i.event_name for i in events],
        [i.properties_json for i in events],
        [i.context_json for i in events],
        [i.occurred_at for i in events],
        [i.received_at for i in events],
        [i.message_id for i in events],
    )
    return {r[0] for r in rows}
