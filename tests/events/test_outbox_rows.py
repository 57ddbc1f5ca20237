"""Every path that writes events announces exactly the events (and profile
changes) some consumer listens for, in the same statement, and nothing
else: tracked calls, identify traits, merges, segment refreshes and
re-checks, and trait changes through the management API."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from definitions.events import SystemEvent
from segments import recheck as recheck_service
from segments import service as segment_service
from tests.support.outbox import OUTBOX_EVENTS, announced, listen, outbox_sizes

PROBE = "probe"


async def _profile_id(api, external_id: str) -> uuid.UUID:
    found = (await api.get("/api/v1/profiles", params={"external_id": external_id})).json()["data"]
    return uuid.UUID(found[0]["id"])


async def test_tracked_events_are_announced_once_and_only_when_listened(tracking, api, engine, workspace):
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, events=["Order Completed", SystemEvent.PAGE_VIEWED])
    call = {"userId": "ann", "event": "Order Completed", "messageId": "order-1", "properties": {"total": 3}}
    assert (await tracking.post("/track", json=call)).status_code == 200
    # The same messageId again stores nothing and announces nothing.
    again = await tracking.post("/track", json=call)
    assert again.json()["duplicates"] == 1
    await tracking.post("/track", json={"userId": "ann", "event": "Viewed Pricing"})  # nobody listens
    await tracking.post("/page", json={"userId": "ann", "name": "Home"})
    batch = [
        {"userId": "bob", "event": "Order Completed"},
        {"userId": "bob", "event": "Cart Viewed"},
        {"type": "identify", "userId": "bob", "traits": {"plan": "free"}},  # nobody listens to traits
    ]
    assert (await tracking.post("/track/batch", json={"batch": batch})).status_code == 200
    rows = await announced(engine, ws, PROBE)
    ann, bob = await _profile_id(api, "ann"), await _profile_id(api, "bob")
    assert sorted((name, pid) for name, pid, _ in rows) == sorted(
        [("Order Completed", ann), (SystemEvent.PAGE_VIEWED.value, ann), ("Order Completed", bob)]
    )
    # Each row names a stored event of that profile, by the event's key.
    async with engine.connect() as conn:
        for name, pid, event_id in rows:
            stored = await conn.execute(
                text(
                    f"SELECT e.name, e.profile_id FROM events e JOIN ({OUTBOX_EVENTS}) o "
                    "ON o.event_id = e.id "
                    "AND o.message_id = e.message_id AND o.occurred_at = e.occurred_at "
                    "WHERE e.workspace_id = :w AND e.id = :i AND o.consumer = :c"
                ),
                {"w": ws, "i": event_id, "c": PROBE},
            )
            assert stored.one() == (name, pid)


async def test_identify_traits_and_merges_are_announced(tracking, api, engine, workspace):
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, traits=["plan"], merges=True)
    await tracking.post("/identify", json={"userId": "cy", "traits": {"plan": "pro", "age": 3}})
    await tracking.post("/identify", json={"userId": "cy", "traits": {"age": 4}})  # unheard key
    cy = await _profile_id(api, "cy")
    assert [(n, p) for n, p, _ in await announced(engine, ws, PROBE)] == [(None, cy)]

    # An anonymous visitor with history, then known as cy: merged into cy.
    await tracking.post("/track", json={"anonymousId": "anon-7", "event": "Browsed"})
    await tracking.post("/identify", json={"userId": "cy", "anonymousId": "anon-7", "traits": {"age": 5}})
    rows = await announced(engine, ws, PROBE)
    assert [(n, p) for n, p, _ in rows] == [(None, cy), (None, cy)]
    assert len({event_id for _, _, event_id in rows}) == 2  # distinct change ids
    async with engine.connect() as conn:
        profiles = await conn.scalar(text("SELECT count(*) FROM profiles WHERE workspace_id = :w"), {"w": ws})
    assert profiles == 1  # the anonymous profile was merged, not kept


async def test_segment_refresh_and_recheck_announce_entered_and_exited(tracking, api, engine, workspace):
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, events=[SystemEvent.SEGMENT_ENTERED, SystemEvent.SEGMENT_EXITED])
    for user, plan in (("dee", "pro"), ("eli", "pro"), ("fay", "free")):
        await tracking.post("/identify", json={"userId": user, "traits": {"plan": plan}})
    created = await api.post(
        "/api/v1/segments",
        json={"name": "Pro", "definition": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}},
    )
    sid = uuid.UUID(created.json()["id"])
    async with engine.begin() as conn:
        assert await segment_service.refresh(conn, ws, sid) == (2, 2, 0)
    dee, eli, fay = [await _profile_id(api, u) for u in ("dee", "eli", "fay")]
    rows = await announced(engine, ws, PROBE)
    assert sorted((n, p) for n, p, _ in rows) == sorted(
        [(SystemEvent.SEGMENT_ENTERED.value, dee), (SystemEvent.SEGMENT_ENTERED.value, eli)]
    )
    # A refresh with nothing new announces nothing more.
    async with engine.begin() as conn:
        assert await segment_service.refresh(conn, ws, sid) == (2, 0, 0)
    assert len(await announced(engine, ws, PROBE)) == 2

    # The single-profile re-check path writes through the same writer.
    async with engine.begin() as conn:
        await conn.execute(
            text('UPDATE profiles SET traits = \'{"plan": "free"}\' WHERE id = :p'), {"p": dee}
        )
        await conn.execute(text('UPDATE profiles SET traits = \'{"plan": "pro"}\' WHERE id = :p'), {"p": fay})
        assert await recheck_service.recheck(conn, ws, [dee, fay]) == (1, 1)
    # Every row carries its event's key (consumers read the event by it).
    async with engine.connect() as conn:
        unkeyed = await conn.scalar(
            text(
                f"SELECT count(*) FROM ({OUTBOX_EVENTS}) o "
                "WHERE o.workspace_id = :w AND o.consumer = :c AND NOT EXISTS ("
                " SELECT 1 FROM events e WHERE e.workspace_id = o.workspace_id"
                " AND e.message_id = o.message_id AND e.occurred_at = o.occurred_at AND e.id = o.event_id)"
            ),
            {"w": ws, "c": PROBE},
        )
    assert unkeyed == 0
    later = [(n, p) for n, p, _ in (await announced(engine, ws, PROBE))[2:]]
    assert sorted(later) == sorted(
        [(SystemEvent.SEGMENT_EXITED.value, dee), (SystemEvent.SEGMENT_ENTERED.value, fay)]
    )


async def test_segments_listen_for_what_they_read(api, engine, workspace):
    ws = workspace.workspace_id

    async def listeners() -> set[tuple[str, str]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT kind, name FROM outbox_listeners "
                    "WHERE workspace_id = :w AND consumer = 'segments'"
                ),
                {"w": ws},
            )
            return {tuple(r) for r in rows}

    definition = {
        "type": "all",
        "conditions": [
            {"type": "trait", "path": "address.city", "op": "eq", "value": "Paris"},
            {"type": "event", "name": "Order Completed"},
            {"type": "email", "action": "opened"},
        ],
    }
    created = (await api.post("/api/v1/segments", json={"name": "Buyers", "definition": definition})).json()
    assert await listeners() == {
        ("trait", "address"),
        ("event", "Order Completed"),
        ("event", SystemEvent.EMAIL_OPENED.value),
        ("merge", "*"),
    }
    patch = {"definition": {"type": "trait", "path": "plan", "op": "exists"}}
    await api.patch(f"/api/v1/segments/{created['id']}", json=patch)
    assert await listeners() == {("trait", "plan"), ("merge", "*")}
    await api.delete(f"/api/v1/segments/{created['id']}")
    assert await listeners() == set()


async def test_profile_api_trait_changes_write_profile_updated(api, engine, workspace):
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, events=[SystemEvent.PROFILE_UPDATED], traits=["plan"])
    created = (
        await api.post("/api/v1/profiles", json={"email": "gil@example.com", "traits": {"plan": "x"}})
    ).json()
    pid = uuid.UUID(created["id"])
    assert [(n, p) for n, p, _ in await announced(engine, ws, PROBE)] == [(None, pid)]
    await api.patch(f"/api/v1/profiles/{pid}", json={"traits": {"plan": "pro", "seats": 3}})
    await api.patch(f"/api/v1/profiles/{pid}", json={"traits": {"seats": 4}})
    rows = await announced(engine, ws, PROBE)
    names = [n for n, _, _ in rows]
    # Each PATCH is one `Profile Updated` event; the one that touched `plan` also a trait change.
    assert names.count(SystemEvent.PROFILE_UPDATED.value) == 2 and names.count(None) == 2
    async with engine.connect() as conn:
        stored = await conn.execute(
            text("SELECT properties FROM events WHERE workspace_id = :w AND name = :n ORDER BY occurred_at"),
            {"w": ws, "n": SystemEvent.PROFILE_UPDATED.value},
        )
        assert [r[0]["traits"] for r in stored] == [["plan", "seats"], ["seats"]]


async def test_one_outbox_row_per_statement_and_consumer(tracking, api, engine, workspace):
    """The events of one statement reach a consumer as one row carrying them
    all (in the order stored); each consumer gets its own row."""
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, events=["Order Completed"], traits=["plan"])
    await listen(engine, ws, "other", events=["Order Completed", "Cart Viewed"])
    batch = [
        {"userId": "hal", "event": "Order Completed", "messageId": "o-1"},
        {"userId": "ida", "event": "Order Completed", "messageId": "o-2"},
        {"userId": "hal", "event": "Cart Viewed", "messageId": "c-1"},
        {"userId": "jon", "event": "Order Completed", "messageId": "o-3"},
        {"type": "identify", "userId": "ida", "traits": {"plan": "pro"}},
    ]
    assert (await tracking.post("/track/batch", json={"batch": batch})).status_code == 200
    # Events in one row; the trait change (written by the same statement) in another.
    assert sorted(await outbox_sizes(engine, ws, PROBE)) == [1, 3]
    assert await outbox_sizes(engine, ws, "other") == [4]
    hal, ida, jon = [await _profile_id(api, u) for u in ("hal", "ida", "jon")]
    events = [(n, p) for n, p, _ in await announced(engine, ws, "other")]
    assert sorted(events) == sorted(
        [("Order Completed", hal), ("Order Completed", ida), ("Cart Viewed", hal), ("Order Completed", jon)]
    )
    # A retry of the whole batch stores nothing and announces nothing.
    again = await tracking.post("/track/batch", json={"batch": batch[:4]})
    assert again.json()["duplicates"] == 4
    assert await outbox_sizes(engine, ws, "other") == [4]


async def test_set_wise_announcements_are_split_into_bounded_rows(
    tracking, api, engine, workspace, monkeypatch
):
    """A refresh that moves many people writes rows of at most
    OUTBOX_ROW_EVENTS events each (a dispatcher's claim stays bounded)."""
    from events import writer

    monkeypatch.setattr(writer, "OUTBOX_ROW_EVENTS", 2)
    ws = workspace.workspace_id
    await listen(engine, ws, PROBE, events=[SystemEvent.SEGMENT_ENTERED])
    users = [f"kim{n}" for n in range(5)]
    batch = [{"type": "identify", "userId": u, "traits": {"plan": "pro"}} for u in users]
    assert (await tracking.post("/track/batch", json={"batch": batch})).status_code == 200
    created = await api.post(
        "/api/v1/segments",
        json={"name": "Pro", "definition": {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}},
    )
    async with engine.begin() as conn:
        assert await segment_service.refresh(conn, ws, uuid.UUID(created.json()["id"])) == (5, 5, 0)
    assert await outbox_sizes(engine, ws, PROBE) == [2, 2, 1]
    profiles = {await _profile_id(api, u) for u in users}
    rows = await announced(engine, ws, PROBE)
    assert {p for _, p, _ in rows} == profiles and len({e for _, _, e in rows}) == 5
