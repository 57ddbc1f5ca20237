"""Property test: the SQL set evaluation and the in-memory single-profile
evaluation agree, for random condition trees over random profiles, events,
memberships and topic opt-outs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.ids import uuid7
from db.tables import events, profiles, segment_memberships, segments, topic_optouts, topics, workspaces
from definitions.segments import matches
from segments.compiler import compile_members
from segments.facts import load_facts
from segments.service import parse_definition

NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()
REF_SEGMENTS = [uuid.UUID(int=i + 1) for i in range(2)]
TOPICS = ["newsletter", "product-updates"]

words = st.sampled_from(["pro", "Pro", "PRO", "free", "adam", "Ada Lovelace", "Ünïcode", "ß", "x", "", "vip"])
dates = st.sampled_from(
    [(TODAY - timedelta(days=d)).isoformat() for d in (0, 1, 6, 7, 8, 29, 30, 31, 400)]
    + [
        f"{TODAY.isoformat()}T10:00:00Z",
        "2026-02-30",
        "20261120",
        "1999-01-01T00:00:00+05:00",
        (TODAY + timedelta(days=2)).isoformat(),
    ]
)
numbers = st.one_of(st.integers(-5, 100), st.sampled_from([0.5, 2.5, -0.25, 30.0, 1e20, 99.99]))
scalars = st.one_of(words, dates, numbers, st.booleans())
json_values = st.one_of(
    scalars,
    st.none(),
    st.lists(st.one_of(words, numbers), max_size=3),
    st.fixed_dictionaries({"city": st.one_of(words, numbers)}),
)
trait_keys = st.sampled_from(["plan", "age", "name", "since", "tags", "address"])
paths = st.sampled_from(["plan", "age", "name", "since", "tags", "address", "address.city", "missing"])
traits = st.dictionaries(trait_keys, json_values, max_size=5)
event_names = st.sampled_from(["Order Completed", "Page Viewed", "Email Opened"])
properties = st.fixed_dictionaries(
    {}, optional={"revenue": numbers, "campaign_id": st.sampled_from(["c1", "c2"]), "path": words}
)
offsets = st.one_of(
    st.sampled_from(
        [timedelta(0), timedelta(days=7), timedelta(days=30), timedelta(hours=24), timedelta(days=-1)]
    ),
    st.integers(0, 60 * 86400).map(lambda s: timedelta(seconds=s)),
)


@st.composite
def comparisons(draw, path_strategy=paths):
    op = draw(
        st.sampled_from(
            [
                "eq",
                "neq",
                "gt",
                "gte",
                "lt",
                "lte",
                "contains",
                "starts_with",
                "in",
                "exists",
                "not_exists",
                "before",
                "after",
                "within_last",
            ]
        )
    )
    value: object
    if op in ("exists", "not_exists"):
        value = None
    elif op in ("gt", "gte", "lt", "lte"):
        value = draw(numbers)
    elif op in ("contains", "starts_with"):
        value = draw(words.filter(bool))
    elif op == "in":
        value = draw(st.lists(scalars, min_size=1, max_size=3))
    elif op in ("before", "after"):
        value = (TODAY - timedelta(days=draw(st.integers(-3, 40)))).isoformat()
    elif op == "within_last":
        value = draw(st.integers(0, 40))
    else:
        value = draw(scalars)
    out = {"path": draw(path_strategy), "op": op}
    if value is not None:
        out["value"] = value
    return out


@st.composite
def windows(draw):
    kind = draw(st.sampled_from(["none", "last", "range"]))
    if kind == "none":
        return None
    if kind == "last":
        return {"last": draw(st.integers(1, 40)), "unit": draw(st.sampled_from(["days", "hours"]))}
    start = NOW - timedelta(days=draw(st.integers(1, 60)))
    return {"from": start.isoformat(), "to": (start + timedelta(days=draw(st.integers(1, 30)))).isoformat()}


@st.composite
def leaves(draw):
    kind = draw(st.sampled_from(["trait", "trait", "event", "email", "segment", "topic"]))
    if kind == "topic":
        node = {"type": "topic", "topic": draw(st.sampled_from([*TOPICS, "never-made"]))}
        if draw(st.booleans()):
            node["subscribed"] = draw(st.booleans())
        return node
    if kind == "trait":
        return {"type": "trait", **draw(comparisons())}
    if kind == "segment":
        return {
            "type": "segment",
            "segment_id": str(draw(st.sampled_from(REF_SEGMENTS))),
            "op": draw(st.sampled_from(["member", "not_member"])),
        }
    if kind == "email":
        node = {"type": "email", "action": "opened"}
        if draw(st.booleans()):
            node["campaign_id"] = draw(st.sampled_from(["c1", "c2"]))
    else:
        node = {
            "type": "event",
            "name": draw(event_names),
            "where": draw(
                st.lists(comparisons(st.sampled_from(["revenue", "campaign_id", "path"])), max_size=2)
            ),
            "count": {
                "op": draw(st.sampled_from([">=", "<=", "=", ">", "<"])),
                "value": draw(st.integers(0, 3)),
            },
        }
    window = draw(windows())
    if window is not None:
        node["within"] = window
    return node


trees = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.builds(lambda c: {"type": "all", "conditions": c}, st.lists(children, max_size=3)),
        st.builds(lambda c: {"type": "any", "conditions": c}, st.lists(children, max_size=3)),
        st.builds(lambda c: {"type": "not", "condition": c}, children),
    ),
    max_leaves=6,
)

people = st.lists(
    st.tuples(
        traits,
        st.lists(st.tuples(event_names, properties, offsets), max_size=5),
        st.sets(st.sampled_from(REF_SEGMENTS)),
        st.sets(st.sampled_from(TOPICS)),
    ),
    min_size=1,
    max_size=6,
)


async def _seed(engine, population) -> tuple[uuid.UUID, list[uuid.UUID]]:
    ws = uuid7()
    ids = []
    async with engine.begin() as conn:
        await conn.execute(insert(workspaces).values(id=ws, name=f"agree-{ws}"))
        for key in TOPICS:
            await conn.execute(insert(topics).values(id=uuid7(), workspace_id=ws, key=key, name=key))
        for person_traits, person_events, member_of, left in population:
            pid = uuid7()
            ids.append(pid)
            await conn.execute(insert(profiles).values(id=pid, workspace_id=ws, traits=person_traits))
            for n, (name, props, offset) in enumerate(person_events):
                await conn.execute(
                    insert(events).values(
                        id=uuid7(),
                        workspace_id=ws,
                        profile_id=pid,
                        type="track",
                        name=name,
                        properties=props,
                        occurred_at=NOW - offset,
                        received_at=NOW,
                        message_id=f"{pid}-{n}",
                    )
                )
            for ref in member_of:
                await conn.execute(
                    insert(segment_memberships).values(segment_id=ref, profile_id=pid, workspace_id=ws)
                )
            for key in left:
                await conn.execute(
                    insert(topic_optouts).values(workspace_id=ws, profile_id=pid, topic_key=key)
                )
    return ws, ids


@pytest.fixture(scope="module")
async def reference_segments(engine):
    """Two segments that random trees refer to (memberships are random per example)."""
    ws = uuid7()
    async with engine.begin() as conn:
        await conn.execute(insert(workspaces).values(id=ws, name=f"refs-{ws}"))
        for ref in REF_SEGMENTS:
            await conn.execute(
                pg_insert(segments)
                .values(
                    id=ref, workspace_id=ws, name=f"ref-{ref}", definition={"type": "all", "conditions": []}
                )
                .on_conflict_do_nothing()
            )
    return REF_SEGMENTS


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(population=people, definitions=st.lists(trees, min_size=1, max_size=4))
async def test_sql_and_in_memory_evaluation_agree(engine, reference_segments, population, definitions):
    ws, ids = await _seed(engine, population)
    roots = [parse_definition(d) for d in definitions]
    async with engine.connect() as conn:
        facts = await load_facts(conn, ws, ids, roots, NOW)
        for definition, root in zip(definitions, roots, strict=True):
            in_sql = {r[0] for r in await conn.execute(compile_members(root, ws, NOW))}
            in_memory = {pid for pid in ids if matches(root, facts[pid], NOW)}
            assert in_sql == in_memory, f"disagree on {definition}"
