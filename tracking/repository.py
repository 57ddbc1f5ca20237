"""SQL of the ingestion path (raw asyncpg).

Each statement takes a whole group as one JSON document, expanded in
PostgreSQL with `json_to_recordset`: serialising a group with orjson costs
a few microseconds, where binding the same rows as a dozen typed arrays
cost several times more on the tracking process's single core (asyncpg
checks every array element in Python). Parameters are sent as text and
cast in SQL, so no client-side JSON codec touches them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from events import writer as event_writer
from events.writer import ProfileChange
from flows import runs_repository as flow_runs
from topics import repository as topic_optouts
from tracking.identity import PlannedProfile
from tracking.items import IngestItem

Seen = dict[uuid.UUID, tuple[datetime, datetime]]
IdentityKeys = dict[str, set[tuple[uuid.UUID, str]]]


def _json(rows: Iterable[Any]) -> str:
    # `default=str` covers asyncpg's own UUID type (ids read back from the database).
    return orjson.dumps(list(rows), default=str).decode()


LOOKUP_SQL = """
SELECT 'u', p.workspace_id, p.external_id, p.id, p.email::text, p.external_id
FROM json_to_recordset($1::text::json) AS q(w uuid, k text)
JOIN profiles p ON p.workspace_id = q.w AND p.external_id = q.k
UNION ALL
SELECT 'e', p.workspace_id, lower(p.email::text), p.id, p.email::text, p.external_id
FROM json_to_recordset($2::text::json) AS q(w uuid, k citext)
JOIN profiles p ON p.workspace_id = q.w AND p.email = q.k
UNION ALL
SELECT 'a', a.workspace_id, a.anonymous_id, p.id, p.email::text, p.external_id
FROM json_to_recordset($3::text::json) AS q(w uuid, k text)
JOIN profile_aliases a ON a.workspace_id = q.w AND a.anonymous_id = q.k
JOIN profiles p ON p.id = a.profile_id
"""

# New profiles are inserted without their email / external id; those are
# set with every other identity change at the end (see writer), so that
# no ordering of creations, merges and renames trips a unique constraint.
INSERT_PROFILES_SQL = """
INSERT INTO profiles (id, workspace_id, traits, first_seen, last_seen)
SELECT t.id, t.w, COALESCE(t.traits, '{}'::jsonb), COALESCE(t.fs, now()), COALESCE(t.ls, now())
FROM json_to_recordset($1::text::json) AS t(id uuid, w uuid, traits jsonb, fs timestamptz, ls timestamptz)
"""

# Locks every existing profile the plan relies on (in id order, so two
# group commits never deadlock on each other) and returns their identity to
# compare with what the plan read.
LOCK_PROFILES_SQL = """
UPDATE profiles p
SET first_seen = LEAST(p.first_seen, v.fs), last_seen = GREATEST(p.last_seen, v.ls)
FROM (
    SELECT * FROM json_to_recordset($1::text::json) AS t(id uuid, fs timestamptz, ls timestamptz) ORDER BY id
) v
WHERE p.id = v.id
RETURNING p.id, lower(p.email::text), p.external_id
"""

MOVE_EVENTS_SQL = "UPDATE events SET profile_id = $3 WHERE workspace_id = $1 AND profile_id = $2"
MOVE_ALIASES_SQL = "UPDATE profile_aliases SET profile_id = $3 WHERE workspace_id = $1 AND profile_id = $2"
# The merged profile leaves its segments; the target is re-checked.
DROP_MEMBERSHIPS_SQL = "DELETE FROM segment_memberships WHERE workspace_id = $1 AND profile_id = $2"
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
SELECT t.w, t.k, t.p FROM json_to_recordset($1::text::json) AS t(w uuid, k text, p uuid)
ON CONFLICT (workspace_id, anonymous_id) DO UPDATE SET profile_id = EXCLUDED.profile_id
"""

CLEAR_IDENTITIES_SQL = "UPDATE profiles SET email = NULL, external_id = NULL WHERE id = ANY($1::uuid[])"

UPDATE_PROFILES_SQL = """
UPDATE profiles p
SET email = CASE WHEN v.s THEN v.email ELSE p.email END,
    external_id = CASE WHEN v.s THEN v.ext ELSE p.external_id END,
    traits = CASE WHEN v.traits IS NULL THEN p.traits ELSE p.traits || v.traits END,
    updated_at = now()
FROM json_to_recordset($1::text::json) AS v(id uuid, s boolean, email citext, ext text, traits jsonb)
WHERE p.id = v.id
"""

# Events (and the outbox rows their listeners need) and profile changes
# (trait keys set, merges) in one statement: events/writer.py.
INSERT_EVENTS_SQL = event_writer.WRITE_SQL

# The common case in one autocommitted statement: lock the known profiles
# (recording when they were seen), check each still holds the email / user
# id the plan relied on, and only then insert the events. Locks last until
# the statement commits, so a concurrent merge or erasure cannot strand an
# event on a profile that no longer exists.
_CHECKED_EVENTS = event_writer.SELECT_FROM_RECORDSET.format(param="$2") + " WHERE (SELECT ok FROM checked)"

LOCK_AND_INSERT_SQL = f"""
WITH v AS (
    SELECT * FROM json_to_recordset($1::text::json)
        AS t(id uuid, fs timestamptz, ls timestamptz, e text, x text)
),
locked AS (
    UPDATE profiles p
    SET first_seen = LEAST(p.first_seen, v.fs), last_seen = GREATEST(p.last_seen, v.ls)
    FROM v
    WHERE p.id = v.id
      AND lower(p.email::text) IS NOT DISTINCT FROM v.e
      AND p.external_id IS NOT DISTINCT FROM v.x
    RETURNING p.id
),
checked AS (SELECT count(*) = json_array_length($1::text::json) AS ok FROM locked),
{event_writer.insert_cte("inserted", _CHECKED_EVENTS)},
{event_writer.outbox_cte("announced", "inserted")}
SELECT (SELECT ok FROM checked), ARRAY(SELECT id FROM inserted)
"""


def identity_keys(items: Sequence[IngestItem]) -> IdentityKeys:
    """The user ids ('u'), emails ('e') and anonymous ids ('a') of the items;
    a previous id (alias) may be either a user id or an anonymous id."""
    keys: IdentityKeys = {"u": set(), "e": set(), "a": set()}
    for item in items:
        ws = item.workspace_id
        if item.user_id:
            keys["u"].add((ws, item.user_id))
        if item.email:
            keys["e"].add((ws, item.email))
        if item.anonymous_id:
            keys["a"].add((ws, item.anonymous_id))
        if item.previous_id:
            keys["u"].add((ws, item.previous_id))
            keys["a"].add((ws, item.previous_id))
    return keys


async def lookup_identities(conn: asyncpg.Connection, keys: IdentityKeys) -> list[Any]:
    """Profiles holding any of the keys, as (kind, ws, key, id, email, external_id)."""
    if not any(keys.values()):
        return []
    return await conn.fetch(
        LOOKUP_SQL, *(_json({"w": w, "k": k} for w, k in keys[kind]) for kind in ("u", "e", "a"))
    )


def _seen(seen: Seen, pid: uuid.UUID) -> tuple[datetime | None, datetime | None]:
    return seen.get(pid, (None, None))


async def insert_profiles(conn: asyncpg.Connection, profiles: Sequence[PlannedProfile], seen: Seen) -> None:
    """Insert new profiles (identity columns are set by `update_profiles`)."""
    if not profiles:
        return
    rows = []
    for p in profiles:
        fs, ls = _seen(seen, p.id)
        rows.append({"id": p.id, "w": p.workspace_id, "traits": p.traits, "fs": fs, "ls": ls})
    await conn.execute(INSERT_PROFILES_SQL, _json(rows))


async def lock_profiles(
    conn: asyncpg.Connection, ids: Sequence[uuid.UUID], seen: Seen
) -> dict[uuid.UUID, tuple[str | None, str | None]]:
    """Lock existing profiles and record when they were seen; returns their
    current (email, external_id)."""
    if not ids:
        return {}
    rows = await conn.fetch(
        LOCK_PROFILES_SQL, _json({"id": i, "fs": _seen(seen, i)[0], "ls": _seen(seen, i)[1]} for i in ids)
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def merge_profile(
    conn: asyncpg.Connection, ws: uuid.UUID, source: uuid.UUID, target: uuid.UUID
) -> None:
    """Move a profile's events, aliases and topic opt-outs to another, merge
    traits (the target's win), and delete it."""
    await conn.execute(MOVE_EVENTS_SQL, ws, source, target)
    await conn.execute(MOVE_ALIASES_SQL, ws, source, target)
    await conn.execute(DROP_MEMBERSHIPS_SQL, ws, source)
    await flow_runs.follow_merge(conn, ws, source, target)
    await topic_optouts.follow_merge(conn, ws, source, target)
    await conn.execute(ABSORB_PROFILE_SQL, ws, source, target)


async def upsert_aliases(conn: asyncpg.Connection, aliases: dict[tuple[uuid.UUID, str], uuid.UUID]) -> None:
    """Point anonymous ids at profiles."""
    if aliases:
        await conn.execute(
            UPSERT_ALIASES_SQL, _json({"w": w, "k": k, "p": p} for (w, k), p in aliases.items())
        )


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
    rows = [
        {"id": p.id, "s": p.identity_changed, "email": p.email, "ext": p.external_id, "traits": p.traits}
        for p in profiles
    ]
    rows += [
        {"id": p.id, "s": True, "email": p.email, "ext": p.external_id, "traits": None}
        for p in created
        if p.email is not None or p.external_id is not None
    ]
    if rows:
        await conn.execute(UPDATE_PROFILES_SQL, _json(rows))


def _events_json(items: Sequence[IngestItem]) -> str:
    return _json(
        {
            "i": i.event_id,
            "w": i.workspace_id,
            "p": i.profile_id,
            "y": i.event_type,
            "n": i.event_name,
            "pr": i.properties,
            "c": i.context,
            "o": i.occurred_at,
            "r": i.received_at,
            "m": i.message_id,
        }
        for i in items
        if i.event_name is not None
    )


async def insert_events(
    conn: asyncpg.Connection, items: Sequence[IngestItem], changes: Sequence[ProfileChange] = ()
) -> set[uuid.UUID]:
    """Insert the events of the items and announce them and the profile
    changes to their listeners; returns the ids actually stored (a
    duplicate messageId is skipped)."""
    if not changes and not any(i.event_name is not None for i in items):
        return set()
    rows = await conn.fetch(INSERT_EVENTS_SQL, _events_json(items), _json(c.as_json() for c in changes))
    return {r[0] for r in rows}


async def lock_and_insert_events(
    conn: asyncpg.Connection, locks: dict[uuid.UUID, PlannedProfile], seen: Seen, items: Sequence[IngestItem]
) -> set[uuid.UUID] | None:
    """Single-statement store for groups of known profiles. Returns the ids
    stored, or None when a profile changed meanwhile (nothing was stored)."""
    lock_rows = []
    for pid in sorted(locks):
        fs, ls = _seen(seen, pid)
        loaded = locks[pid].loaded or (None, None)
        lock_rows.append({"id": pid, "fs": fs, "ls": ls, "e": loaded[0], "x": loaded[1]})
    ok, inserted = await conn.fetchrow(LOCK_AND_INSERT_SQL, _json(lock_rows), _events_json(items))
    return set(inserted) if ok else None
