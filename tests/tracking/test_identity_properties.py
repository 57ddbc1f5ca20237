"""Property test: whatever mix of identify / track / alias calls arrives,
in whatever grouping, no event is lost or left pointing at a deleted
profile, and every user id and email ends on exactly one profile."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import new_workspace
from tests.support.db import count
from tracking.items import to_item
from tracking.schemas import AliasCall, IdentifyCall, TrackCall

users = st.sampled_from(["u1", "u2", "u3"])
anons = st.sampled_from(["a1", "a2", "a3", "a4"])
emails = st.sampled_from(["x@example.com", "y@example.com", "z@example.com"])


@st.composite
def calls(draw):
    kind = draw(st.sampled_from(["track", "track", "identify", "alias"]))
    if kind == "alias":
        return AliasCall(userId=draw(users), previousId=draw(st.one_of(anons, users)))
    ids = {
        "userId": draw(st.one_of(st.none(), users)),
        "anonymousId": draw(st.one_of(st.none(), anons)),
        "email": draw(st.one_of(st.none(), emails)),
    }
    if not any(ids.values()):
        ids["anonymousId"] = draw(anons)
    if kind == "identify":
        return IdentifyCall(**ids, traits={"n": draw(st.integers(0, 9))})
    return TrackCall(**ids, event="E", messageId=str(uuid.uuid4()))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(groups=st.lists(st.lists(calls(), min_size=1, max_size=6), min_size=1, max_size=6))
async def test_identity_resolution_never_loses_events(tracking_app, sessionmaker, engine, groups):
    writer = tracking_app.state.services.writer
    keys = await new_workspace(sessionmaker)
    ws = keys.workspace_id
    now = datetime.now(UTC)
    # Each inner list is one request; requests of a step run concurrently
    # so they share group commits in varying combinations.
    tracked = 0
    for step in (groups[: len(groups) // 2], groups[len(groups) // 2 :]):
        requests = [[to_item(c, ws, now) for c in group] for group in step]
        tracked += sum(1 for r in requests for i in r if i.event_name)
        results = await asyncio.gather(*(writer.write(r) for r in requests))
        assert sum(res.stored for res in results) == sum(1 for r in requests for i in r if i.event_name)

    assert await count(engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=ws) == tracked
    orphans = await count(
        engine,
        "SELECT count(*) FROM events e WHERE e.workspace_id = :ws "
        "AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.id = e.profile_id)",
        ws=ws,
    )
    assert orphans == 0
    dangling = await count(
        engine,
        "SELECT count(*) FROM profile_aliases a WHERE a.workspace_id = :ws "
        "AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.id = a.profile_id AND p.workspace_id = :ws)",
        ws=ws,
    )
    assert dangling == 0
