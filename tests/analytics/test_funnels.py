"""Funnels from the rollups equal the definition read from `events`
(analytics/repository.funnel_from_events) and a plain Python reference, on
a generated dataset with known answers: same-day steps in and out of
order, steps at the window's edge, days busier than the rollup keeps
times of, and events arriving over several rollup passes."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from analytics import funnels
from analytics import repository as repo
from analytics.funnel_cache import DayCache
from analytics.rollups import rollup_pass
from tests.conftest import new_workspace

NAMES = ["View", "Cart", "Order", "Pay"]


def reference(
    events: list[tuple[uuid.UUID, str, datetime]],
    steps: list[str],
    start: datetime,
    end: datetime,
    window: int,
) -> list[int]:
    """The funnel's definition, a profile at a time."""
    by_profile: dict[uuid.UUID, list[tuple[datetime, str]]] = {}
    for profile, name, at in events:
        by_profile.setdefault(profile, []).append((at, name))
    counts = [0] * len(steps)
    for rows in by_profile.values():
        rows.sort()
        entry = [t for t, n in rows if n == steps[0] and start <= t < end]
        if not entry:
            continue
        t0 = t = entry[0]
        counts[0] += 1
        for k, step in enumerate(steps[1:], start=1):
            later = [s for s, n in rows if n == step and t < s <= t0 + timedelta(seconds=window)]
            if not later:
                break
            t = later[0]
            counts[k] += 1
    return counts


def generate(seed: int, profiles: int, today: datetime) -> list[tuple[uuid.UUID, str, datetime]]:
    """Journeys over the last 20 days: mostly in order, some reversed on one
    day, some spread over days (window edges), a few busy days (more events
    of a name on one day than the rollup keeps times of)."""
    rng = random.Random(seed)
    out = []
    for _ in range(profiles):
        pid = uuid.uuid4()
        for _ in range(rng.randint(1, 4)):
            at = today - timedelta(days=rng.randint(0, 19), minutes=rng.randint(0, 1439))
            kind = rng.random()
            for name in rng.sample(NAMES, rng.randint(1, 4)) if kind < 0.3 else NAMES[: rng.randint(1, 4)]:
                out.append((pid, name, at))
                at += timedelta(minutes=rng.choice([1, 30, 300, 1000, 1439, 1440, 1441, 2000, 4400]))
        if rng.random() < 0.08:  # a busy day: many Carts, then a View among them, then a Cart
            day = today - timedelta(days=rng.randint(1, 10), hours=today.hour - 1)
            out += [(pid, "Cart", day + timedelta(minutes=m)) for m in range(funnels.MAX_TIMES + 3)]
            out.append((pid, "View", day + timedelta(minutes=funnels.MAX_TIMES + 5, seconds=30)))
            out.append((pid, "Cart", day + timedelta(minutes=funnels.MAX_TIMES + 20)))
            out.append((pid, "Order", day + timedelta(hours=20)))
    return out


async def insert(engine, ws: uuid.UUID, events: list[tuple[uuid.UUID, str, datetime]]) -> None:
    async with engine.begin() as conn:
        months = {date(at.year, at.month, 1) for _, _, at in events}
        for month in months:
            await conn.execute(text("SELECT mp_ensure_event_partition(:m)"), {"m": month})
        await conn.execute(
            text(
                """
                INSERT INTO events (id, workspace_id, profile_id, type, name, properties, occurred_at,
                                    received_at, message_id)
                SELECT gen_random_uuid(), :ws, p, 'track', n, '{}'::jsonb, t, now(), gen_random_uuid()::text
                FROM unnest(CAST(:p AS uuid[]), CAST(:n AS text[]), CAST(:t AS timestamptz[])) x(p, n, t)
                """
            ),
            {"ws": ws, "p": [e[0] for e in events], "n": [e[1] for e in events], "t": [e[2] for e in events]},
        )


def test_window_unions_match_a_plain_union():
    rng = random.Random(7)
    days = [rng.getrandbits(40) for _ in range(23)]
    for width in (1, 2, 3, 5, 23, 40):
        expected = [0] * len(days)
        for i in range(len(days)):
            for d in days[i : i + width]:
                expected[i] |= d
        assert funnels.window_unions(days, width) == expected, width


def test_bitmaps_round_trip():
    bits = funnels.with_ordinals(0, [0, 7, 8, 1000, 123_457])
    bits = funnels.with_ordinals(funnels.unpack(funnels.pack(bits)), [3, 7])
    assert funnels.ordinals_of(bits) == [0, 3, 7, 8, 1000, 123_457]
    assert funnels.unpack(None) == 0 and funnels.ordinals_of(0) == []


def test_firsts_merge_and_round_trip():
    old = funnels.Firsts.merged(funnels.Firsts.unpack(None), [2, 5, 9], [100, 200, 300], [False, True, False])
    again = funnels.Firsts.unpack(old.pack())
    merged = funnels.Firsts.merged(again, [1, 5], [50, 150], [False, False])
    assert [merged.get(o) for o in (1, 2, 5, 9, 3)] == [
        (50, False),
        (100, False),
        (150, False),
        (300, False),
        None,
    ]


def _cols(*days: dict[int, tuple[int, bool]]) -> list[funnels.Firsts]:
    out = []
    for day in days:
        keys = sorted(day)
        out.append(
            funnels.Firsts.merged(
                funnels.Firsts.unpack(None), keys, [day[k][0] for k in keys], [day[k][1] for k in keys]
            )
        )
    return out


@pytest.mark.parametrize(
    ("entry", "days", "expected"),
    [
        (1000, [{7: (2000, False)}], True),  # later the same day
        (1000, [{7: (500, False)}], False),  # only earlier that day
        (1000, [{7: (500, True)}], None),  # earlier, then more that day: not decidable here
        (1000, [{7: (1000, False)}], None),  # the same second
        (1000, [{7: (500, False)}, {7: (999, False)}], True),  # next day, inside 24 h
        (1000, [{}, {7: (1000, False)}], None),  # next day, exactly 24 h to the second
        (1000, [{}, {7: (1001, False)}], False),  # next day, past 24 h
        (1000, [{}, {8: (10, False)}], False),  # someone else
    ],
)
def test_second_step_from_first_seconds(entry, days, expected):
    cols = _cols(*days) + _cols({})
    assert funnels._second_step(entry, 0, 7, cols, 1, 86400) is expected


@pytest.mark.parametrize("seed", [1, 2])
async def test_rollup_funnels_equal_the_events_definition(engine, sessionmaker, seed):
    ws = (await new_workspace(sessionmaker)).workspace_id
    today = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    events = generate(seed, 400, today)
    half = len(events) // 2
    # Two batches, a pass after each: the second adds to rows and bitmaps the first made.
    await insert(engine, ws, events[:half])
    await rollup_pass(engine, lag_seconds=0, slice_hours=6)
    await insert(engine, ws, events[half:])
    await rollup_pass(engine, lag_seconds=0, slice_hours=6)

    day0 = today.replace(hour=0, minute=0, second=0)
    cases = [
        (["View", "Cart"], 24 * 3600, 20),
        (["View", "Cart", "Order"], 24 * 3600, 20),
        (["View", "Cart", "Order", "Pay"], 3600, 20),
        (["View", "Cart", "Order", "Pay"], 25 * 3600, 7),
        (["Cart", "View", "Cart"], 24 * 3600, 14),
        (["View", "View"], 48 * 3600, 20),
        # Days wholly inside the window decide step 2 from bitmaps alone.
        (["View", "Cart"], 168 * 3600, 20),
        (["View", "Cart", "Order"], 96 * 3600, 20),
        (["Cart", "View", "Cart", "Order"], 72 * 3600, 14),
        (["Order", "Pay"], 2 * 3600, 3),
        (["View", "Nothing"], 24 * 3600, 20),
    ]
    fallback_reads = 0
    original = funnels._next_from_events

    async def counted(*args, **kwargs):
        nonlocal fallback_reads
        fallback_reads += 1
        return await original(*args, **kwargs)

    funnels._next_from_events = counted
    try:
        for steps, window, days in cases:
            start, end = day0 - timedelta(days=days - 1), day0 + timedelta(days=1)
            async with sessionmaker() as session:
                rolled = await funnels.funnel_counts(session, ws, steps, start, end, window)
                read = await repo.funnel_from_events(session, ws, steps, start, end, window)
            expected = reference(events, steps, start, end, window)
            assert rolled == read == expected, (steps, window, days)
            assert expected[0] > 0 and (expected[1] > 0 or "Nothing" in steps)
    finally:
        funnels._next_from_events = original
    # The busy days were decided by a read of their events, not guessed.
    assert fallback_reads > 0
    # Another workspace sees none of it.
    other = (await new_workspace(sessionmaker)).workspace_id
    async with sessionmaker() as session:
        start = day0 - timedelta(days=19)
        none = await funnels.funnel_counts(
            session, other, ["View", "Cart"], start, day0 + timedelta(days=1), 86400
        )
    assert none == [0, 0]


async def test_known_answers(engine, sessionmaker):
    ws = (await new_workspace(sessionmaker)).workspace_id
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    p = [uuid.uuid4() for _ in range(6)]
    h = lambda hours: day + timedelta(hours=hours)  # noqa: E731
    events = [
        (p[0], "View", h(1)), (p[0], "Cart", h(2)), (p[0], "Order", h(3)),  # all three
        (p[1], "Cart", h(1)), (p[1], "View", h(2)),  # cart before view: entered only
        (p[2], "View", h(23)), (p[2], "Cart", h(24 + 22)),  # next day, inside 24 h: two steps
        (p[3], "View", h(10)), (p[3], "Cart", h(24 + 11)),  # 25 h later: outside 24 h
        (p[4], "View", h(5)), (p[4], "View", h(30)), (p[4], "Cart", h(31)),  # entry is the first View
        (p[5], "Cart", h(2)),  # never entered
    ]  # fmt: skip
    await insert(engine, ws, events)
    await rollup_pass(engine, lag_seconds=0, slice_hours=6)
    async with sessionmaker() as session:
        counts = await funnels.funnel_counts(
            session, ws, ["View", "Cart", "Order"], day, day + timedelta(days=3), 24 * 3600
        )
        wider = await funnels.funnel_counts(
            session, ws, ["View", "Cart", "Order"], day, day + timedelta(days=3), 26 * 3600
        )
    assert counts == [5, 2, 1]  # p0, p2 reach Cart; p4's Cart is 26 h after its entry
    assert wider == [5, 4, 1]  # p3 (25 h) and p4 (26 h) now in


def test_day_cache_is_bounded_and_versioned():
    cache = DayCache(max_bytes=100)
    cache.put("a", 1, "A", 40)
    cache.put("b", 1, "B", 40)
    assert cache.get("a", 1) == "A" and cache.get("a", 2) is None  # another version: not served
    cache.put("c", 1, "C", 40)  # over 100 bytes: "b", the least recently used, goes
    assert cache.get("b", 1) is None and cache.get("a", 1) == "A" and cache.get("c", 1) == "C"
    cache.put("a", 2, "A2", 50)  # replaced, not added to
    assert cache.bytes == 90 and len(cache) == 2 and cache.get("a", 2) == "A2"
    cache.put("huge", 1, "H", 101)  # larger than the cache: not kept, nothing else lost
    assert cache.get("huge", 1) is None and cache.bytes == 90


async def test_cached_days_follow_late_events_and_workspaces(engine, sessionmaker, monkeypatch):
    """Funnels served from the process's cache stay exact when late events
    rewrite past days, across workspaces and under a small bound; days
    nobody rewrote are not read again."""
    cache = DayCache()
    monkeypatch.setattr(funnels, "CACHE", cache)
    decoded = 0
    original = funnels._decoded

    def counted(*args):
        nonlocal decoded
        decoded += 1
        return original(*args)

    monkeypatch.setattr(funnels, "_decoded", counted)
    today = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    day0 = today.replace(hour=0, minute=0, second=0)
    start, end = day0 - timedelta(days=19), day0 + timedelta(days=1)
    steps = ["View", "Cart", "Order"]
    a, b = [(await new_workspace(sessionmaker)).workspace_id for _ in range(2)]
    events = {a: generate(3, 200, today), b: generate(4, 200, today)}
    for ws in (a, b):
        await insert(engine, ws, events[ws])
    await rollup_pass(engine, lag_seconds=0, slice_hours=24)

    async def check(ws: uuid.UUID, window: int = 86400) -> list[int]:
        async with sessionmaker() as session:
            counts = await funnels.funnel_counts(session, ws, steps, start, end, window)
        assert counts == reference(events[ws], steps, start, end, window) and counts[2] > 0
        return counts

    for ws in (a, b):
        await check(ws)
    assert decoded > 0 and len(cache) > 0
    decoded = 0
    before = await check(a)
    assert decoded == 0  # nothing changed: every day from the cache
    # Late events on past days of workspace a: new entrants and new carts.
    late = [(p, "Cart", at + timedelta(minutes=1)) for p, n, at in events[a][:300:3] if n == "View"]
    late += generate(5, 30, today - timedelta(days=8))
    events[a] += late
    await insert(engine, a, late)
    await rollup_pass(engine, lag_seconds=0, slice_hours=24)
    assert await check(a) != before  # a stale day would have kept the old answer
    assert decoded > 0  # the rewritten days were read anew
    decoded = 0
    await check(b)
    assert decoded == 0  # b's days were not rewritten
    # A bound that holds a few days' rows: the rest read each time, answers still exact.
    small = DayCache(max_bytes=4000)
    monkeypatch.setattr(funnels, "CACHE", small)
    for ws in (a, b):
        await check(ws, 48 * 3600)
    assert 0 < small.bytes <= 4000 and 0 < len(small) < len(cache)  # cache: every day of both


def test_second_step_skips_the_days_the_bitmaps_ruled_out():
    window = 3 * 86400  # day 1 wholly inside: the caller passes skip=1
    only_day_one = _cols({}, {7: (10, False)}, {}, {}, {})
    assert funnels._second_step(1000, 0, 7, only_day_one, 3, window) is True
    assert funnels._second_step(1000, 0, 7, only_day_one, 3, window, skip=1) is False  # not looked at
    last_day = _cols({}, {}, {}, {7: (999, False)}, {})
    assert funnels._second_step(1000, 0, 7, last_day, 3, window, skip=1) is True
    # On the entry day but before the entry: the skipped days are looked at.
    earlier = _cols({7: (500, False)}, {7: (10, False)}, {}, {}, {})
    assert funnels._second_step(1000, 0, 7, earlier, 3, window, skip=1) is True
