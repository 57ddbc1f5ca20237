"""Re-check a few profiles against every segment of their workspace, right
after tracking saw them do something a segment depends on.

Tracking queues the profile ids in Redis (`queue_profiles`); the worker's
`recheck_profiles` activity pops a batch, evaluates each profile with the
in-memory evaluator, and applies the difference to stored memberships with
`Segment Entered` / `Segment Exited` events — the same effect as a full
refresh, for those profiles only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncConnection

from definitions.segments import matches
from segments import repository as repo
from segments.facts import load_facts
from segments.service import parse_definition

DIRTY_KEY = "seg:dirty"


def pending_key(prefix: str, workspace_id: uuid.UUID | str) -> str:
    """The Redis set of a workspace's profiles waiting for a re-check."""
    return f"{prefix}seg:pending:{workspace_id}"


async def queue_profiles(
    redis: aioredis.Redis, prefix: str, by_workspace: dict[uuid.UUID, set[uuid.UUID]]
) -> None:
    """Queue profiles for a re-check and mark their workspaces dirty."""
    if not by_workspace:
        return
    pipe = redis.pipeline(transaction=False)
    for workspace_id, profile_ids in by_workspace.items():
        pipe.sadd(pending_key(prefix, workspace_id), *(str(p) for p in profile_ids))
        pipe.sadd(prefix + DIRTY_KEY, str(workspace_id))
    await pipe.execute()


async def pop_dirty_workspaces(redis: aioredis.Redis, prefix: str, count: int = 100) -> list[uuid.UUID]:
    """Workspaces with queued profiles (each returned once per marking)."""
    members = await redis.spop(prefix + DIRTY_KEY, count)
    return [uuid.UUID(m.decode() if isinstance(m, bytes) else m) for m in members or []]


async def pop_profiles(
    redis: aioredis.Redis, prefix: str, workspace_id: uuid.UUID, count: int
) -> tuple[list[uuid.UUID], int]:
    """Up to `count` queued profiles of a workspace, and how many remain."""
    key = pending_key(prefix, workspace_id)
    members = await redis.spop(key, count) or []
    remaining = await redis.scard(key)
    return [uuid.UUID(m.decode() if isinstance(m, bytes) else m) for m in members], remaining


def _in_dependency_order(rows: Iterable) -> list:
    """Segments after the segments they refer to."""
    by_id = {r["id"]: r for r in rows}
    ordered, done = [], set()

    def visit(sid: uuid.UUID, path: frozenset) -> None:
        if sid in done or sid not in by_id or sid in path:
            return
        for ref in by_id[sid]["segment_refs"]:
            visit(ref, path | {sid})
        done.add(sid)
        ordered.append(by_id[sid])

    for sid in sorted(by_id):
        visit(sid, frozenset())
    return ordered


async def recheck(
    conn: AsyncConnection, workspace_id: uuid.UUID, profile_ids: list[uuid.UUID]
) -> tuple[int, int]:
    """Bring the memberships of these profiles up to date in every segment
    of the workspace. Returns (entered, exited)."""
    rows = _in_dependency_order(await repo.workspace_segments(conn, workspace_id))
    if not rows or not profile_ids:
        return 0, 0
    for row in sorted(rows, key=lambda r: r["id"]):  # same lock order as every writer
        await repo.lock_segment(conn, row["id"])
    now = datetime.now(UTC)
    roots = {row["id"]: parse_definition(row["definition"]) for row in rows}
    facts = await load_facts(conn, workspace_id, profile_ids, list(roots.values()), now)
    ids = list(facts)
    # Current memberships in every segment (refs included), as a fact per profile.
    current = {(sid, pid) for pid, sid in await repo.load_memberships(conn, ids, list(roots))}
    entered_total = exited_total = 0
    changes: list[tuple[str, uuid.UUID, str, uuid.UUID]] = []
    for row in rows:
        sid = row["id"]
        add, remove = [], []
        for pid in ids:
            member = matches(roots[sid], facts[pid], now)
            if member and (sid, pid) not in current:
                add.append((sid, pid))
                facts[pid].segment_ids.add(sid)
            elif not member and (sid, pid) in current:
                remove.append((sid, pid))
                facts[pid].segment_ids.discard(sid)
        added = await repo.add_memberships(conn, add, workspace_id, now)
        removed = await repo.remove_memberships(conn, remove)
        changes += [("Segment Entered", s, row["name"], p) for s, p in added]
        changes += [("Segment Exited", s, row["name"], p) for s, p in removed]
        entered_total += len(added)
        exited_total += len(removed)
    await repo.write_membership_events(conn, workspace_id, changes, now)
    return entered_total, exited_total
