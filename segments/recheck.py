"""Re-check a few profiles against every segment of their workspace, right
after they did something a segment depends on.

The event writer announces such events and trait changes in the outbox;
the dispatcher signals the workspace's `SegmentRecheckWorkflow` with the
profile ids, and its `recheck_profiles` activity evaluates each profile with
the in-memory evaluator and applies the difference to stored memberships
with `Segment Entered` / `Segment Exited` events — the same effect as a full
refresh, for those profiles only. Re-checking a profile twice changes
nothing the second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from definitions.segments import matches
from segments import repository as repo
from segments.facts import load_facts
from segments.service import parse_definition


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
    changes: list[tuple[bool, uuid.UUID, str, uuid.UUID]] = []
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
        changes += [(True, s, row["name"], p) for s, p in added]
        changes += [(False, s, row["name"], p) for s, p in removed]
        entered_total += len(added)
        exited_total += len(removed)
    await repo.write_membership_events(conn, workspace_id, changes, now)
    return entered_total, exited_total
