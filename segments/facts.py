"""Load what the in-memory evaluator needs about some profiles, and
evaluate segments for them (the single-profile hot path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from definitions.segments import (
    EmailCondition,
    EventCondition,
    EventFact,
    ProfileFacts,
    SegmentCondition,
    TopicCondition,
    matches,
    walk,
)
from segments import repository as repo


def _event_conditions(roots: Iterable[Any]) -> list[EventCondition]:
    found = []
    for root in roots:
        for node in walk(root):
            condition = node.as_event() if isinstance(node, EmailCondition) else node
            if isinstance(condition, EventCondition):
                found.append(condition)
    return found


def _time_range(
    conditions: Sequence[EventCondition], now: datetime
) -> tuple[datetime | None, datetime | None]:
    """The narrowest range holding every condition's window (None: unbounded)."""
    lowers, uppers = [], []
    for condition in conditions:
        lower, upper, _ = condition.within.bounds(now) if condition.within else (None, None, False)
        lowers.append(lower)
        uppers.append(upper)
    since = None if not lowers or any(v is None for v in lowers) else min(lowers)  # type: ignore[type-var]
    until = None if not uppers or any(v is None for v in uppers) else max(uppers)  # type: ignore[type-var]
    return since, until


async def load_facts(
    conn: AsyncConnection,
    workspace_id: uuid.UUID,
    profile_ids: Sequence[uuid.UUID],
    roots: Sequence[Any],
    now: datetime,
) -> dict[uuid.UUID, ProfileFacts]:
    """Facts of the profiles that exist, limited to what `roots` read."""
    traits = await repo.load_traits(conn, workspace_id, profile_ids)
    facts = {pid: ProfileFacts(traits=t) for pid, t in traits.items()}
    if not facts:
        return facts
    ids = list(facts)
    conditions = _event_conditions(roots)
    since, until = _time_range(conditions, now)
    names = sorted({c.name for c in conditions})
    for pid, name, properties, occurred_at in await repo.load_events(
        conn, workspace_id, ids, names, since, until
    ):
        facts[pid].events.append(EventFact(name, properties, occurred_at))
    refs = sorted({n.segment_id for root in roots for n in walk(root) if isinstance(n, SegmentCondition)})
    for pid, segment_id in await repo.load_memberships(conn, ids, refs):
        facts[pid].segment_ids.add(segment_id)
    keys = sorted({n.topic for root in roots for n in walk(root) if isinstance(n, TopicCondition)})
    for pid, key in await repo.load_topic_optouts(conn, workspace_id, ids, keys):
        facts[pid].topic_optouts.add(key)
    return facts


async def profile_matches(
    conn: AsyncConnection, workspace_id: uuid.UUID, profile_id: uuid.UUID, root: Any, now: datetime
) -> bool | None:
    """Is this profile in the segment now? None when no such profile."""
    facts = await load_facts(conn, workspace_id, [profile_id], [root], now)
    if profile_id not in facts:
        return None
    return matches(root, facts[profile_id], now)
