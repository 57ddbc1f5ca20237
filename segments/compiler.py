"""Compile a segment definition to one SQL statement (SQLAlchemy Core).

The statement selects the ids of a workspace's profiles that match. Each
event (or email) condition becomes an aggregated subquery — the matching
events counted per profile, read through `(workspace_id, name,
occurred_at)` with the window bounds bound as parameters, so partitions
outside the window are pruned — LEFT JOINed to `profiles`; each segment
reference joins `segment_memberships`; a topic condition is an EXISTS probe
of `topic_optouts`' primary key. Conditions become boolean
expressions that are never NULL, so `not` and `any` keep two-valued logic;
the expressions are also strict on the joined side where that is correct,
which lets PostgreSQL turn a top-level "did at least once" into an inner
join and "has not done" into an anti-join.

Every user value is a bound parameter. The rules the expressions implement
are stated in `definitions/segments.py`, whose in-memory evaluator must
agree with this compiler (a property test checks it).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    FromClause,
    Numeric,
    Select,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from db.tables import events, profiles, segment_memberships, topic_optouts
from definitions.segments import (
    DATE_OPS,
    NUMERIC_OPS,
    AllGroup,
    AnyGroup,
    Comparison,
    EmailCondition,
    EventCondition,
    NotGroup,
    Op,
    SegmentCondition,
    TopicCondition,
    TraitCondition,
)

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"


def _nest(keys: tuple[str, ...], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def _fold(expr: ColumnElement[Any]) -> ColumnElement[str]:
    return func.translate(expr, _UPPER, _LOWER)


def comparison_sql(document: ColumnElement[Any], cmp: Comparison, now: datetime) -> ColumnElement[bool]:
    """A never-NULL boolean for `cmp` applied to a jsonb column (traits or properties)."""
    path = literal(list(cmp.keys), ARRAY(Text))
    value = document.op("#>", return_type=JSONB)(path)
    text_value = document.op("#>>", return_type=Text)(path)
    kind = func.jsonb_typeof(value)
    op, target = cmp.op, cmp.value
    if op in (Op.exists, Op.not_exists):
        present = and_(value.is_not(None), kind != "null")
        return present if op == Op.exists else not_(present)
    if op in (Op.eq, Op.neq):
        # For a scalar, jsonb containment at a path is exactly equality, is
        # never NULL, and can use the GIN index on traits.
        contained = document.op("@>", return_type=Boolean)(literal(_nest(cmp.keys, target), JSONB))
        return contained if op == Op.eq else not_(contained)
    if op == Op.in_:
        candidates = cast(literal([_json(t) for t in target], ARRAY(Text)), ARRAY(JSONB))  # type: ignore[union-attr]
        return func.coalesce(value == func.any(candidates), false())
    if op in NUMERIC_OPS:
        number = cast(value, Numeric)
        bound = literal(Decimal(repr(target)), Numeric)
        test = {
            Op.gt: number > bound,
            Op.gte: number >= bound,
            Op.lt: number < bound,
            Op.lte: number <= bound,
        }[op]
        return case((kind == "number", test), else_=false())
    if op == Op.contains:
        return case(
            (kind == "string", func.strpos(_fold(text_value), _fold(literal(target, Text))) > 0),
            (kind == "array", value.op("@>", return_type=Boolean)(literal([target], JSONB))),
            else_=false(),
        )
    if op == Op.starts_with:
        return case(
            (kind == "string", func.starts_with(_fold(text_value), _fold(literal(target, Text)))),
            else_=false(),
        )
    # before / after / within_last: the leading calendar date, compared as text.
    day = func.left(text_value, 10).collate("C")
    is_date = and_(kind == "string", text_value.op("~")(_DATE_PATTERN))
    if op in DATE_OPS:
        bound_day = literal(target[:10], Text)  # type: ignore[index]
        test = day < bound_day if op == Op.before else day > bound_day
    else:
        today = now.date()
        cutoff = (today - timedelta(days=target)).isoformat()  # type: ignore[arg-type]
        test = and_(day >= literal(cutoff, Text), day <= literal(today.isoformat(), Text))
    return case((is_date, test), else_=false())


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _count_shape(node: EventCondition) -> str:
    """'some' (at least once), 'none' (never), or 'other' counts."""
    op, k = node.count.op, node.count.value
    if (op == ">=" and k == 1) or (op == ">" and k == 0):
        return "some"
    if (op == "=" and k == 0) or (op == "<=" and k == 0) or (op == "<" and k == 1):
        return "none"
    return "other"


@dataclass
class _Compiler:
    workspace_id: uuid.UUID
    now: datetime
    joins: list[tuple[FromClause, ColumnElement[bool]]] = field(default_factory=list)
    names: Iterator[int] = field(default_factory=itertools.count)

    def condition(self, node: Any, top: bool = False) -> ColumnElement[bool]:
        """`top`: the node is a conjunct of the root, where a false and a
        NULL result mean the same, so (NOT) EXISTS forms can be used."""
        if isinstance(node, AllGroup):
            return and_(*(self.condition(c, top) for c in node.conditions)) if node.conditions else true()
        if isinstance(node, AnyGroup):
            return or_(*(self.condition(c) for c in node.conditions)) if node.conditions else false()
        if isinstance(node, NotGroup):
            return not_(self.condition(node.condition))
        if isinstance(node, TraitCondition):
            return comparison_sql(profiles.c.traits, node, self.now)
        if isinstance(node, EmailCondition):
            node = node.as_event()
        if isinstance(node, EventCondition):
            shape = _count_shape(node)
            if top and shape != "other":
                # A semi-join or anti-join, as one would write it by hand.
                matching = self.matching_events(node, alias=f"x{next(self.names)}")
                found = matching.where(matching.selected_columns[0] == profiles.c.id).exists()
                return found if shape == "some" else not_(found)
            return self.event(node)
        if isinstance(node, SegmentCondition):
            return self.segment(node)
        if isinstance(node, TopicCondition):
            return self.topic(node)
        raise TypeError(f"not a condition: {node!r}")

    def matching_events(self, node: EventCondition, alias: str) -> Select[Any]:
        """`SELECT profile_id FROM events WHERE <name, window, filters>`."""
        e = events.alias(alias)
        where = [e.c.workspace_id == self.workspace_id, e.c.name == node.name]
        if node.within is not None:
            lower, upper, inclusive = node.within.bounds(self.now)
            if lower is not None:
                where.append(e.c.occurred_at >= lower)
            if upper is not None:
                where.append(e.c.occurred_at <= upper if inclusive else e.c.occurred_at < upper)
        where += [comparison_sql(e.c.properties, f, self.now) for f in node.where]
        return select(e.c.profile_id).where(*where)

    def counted(self, node: EventCondition, alias: str) -> Select[Any]:
        """Matching events counted per profile."""
        matching = self.matching_events(node, alias)
        profile_id = matching.selected_columns[0]
        return matching.with_only_columns(profile_id.label("profile_id"), func.count().label("n")).group_by(
            profile_id
        )

    def event(self, node: EventCondition) -> ColumnElement[bool]:
        n = next(self.names)
        counted = self.counted(node, f"e{n}").subquery(f"ev{n}")
        self.joins.append((counted, counted.c.profile_id == profiles.c.id))
        n, k = counted.c.n, node.count.value
        test = {">=": n >= k, "<=": n <= k, "=": n == k, ">": n > k, "<": n < k}[node.count.op]
        if node.count.holds(0):
            # Zero counts: no row joined.
            return or_(counted.c.profile_id.is_(None), test)
        return and_(counted.c.profile_id.is_not(None), test)

    def segment(self, node: SegmentCondition) -> ColumnElement[bool]:
        m = segment_memberships.alias(f"sm{next(self.names)}")
        on = and_(m.c.segment_id == node.segment_id, m.c.profile_id == profiles.c.id)
        self.joins.append((m, on))
        return m.c.profile_id.is_not(None) if node.op == "member" else m.c.profile_id.is_(None)

    def topic(self, node: TopicCondition) -> ColumnElement[bool]:
        o = topic_optouts.alias(f"to{next(self.names)}")
        left = (
            select(o.c.profile_id)
            .where(
                o.c.workspace_id == self.workspace_id,
                o.c.profile_id == profiles.c.id,
                o.c.topic_key == node.topic,
            )
            .exists()
        )
        return not_(left) if node.subscribed else left


def compile_members(root: Any, workspace_id: uuid.UUID, now: datetime) -> Select[Any]:
    """`SELECT profile_id ...` for every profile of the workspace that matches."""
    compiler = _Compiler(workspace_id, now)
    single = root.as_event() if isinstance(root, EmailCondition) else root
    if isinstance(single, EventCondition) and not single.count.holds(0):
        # Only people who did something: read the events alone (every event
        # belongs to an existing profile of the workspace).
        if _count_shape(single) == "some":
            return compiler.matching_events(single, "e").distinct()
        counted = compiler.counted(single, "e")
        n = func.count()
        k = single.count.value
        having = {">=": n >= k, "=": n == k, ">": n > k, "<=": n <= k, "<": n < k}[single.count.op]
        return counted.with_only_columns(counted.selected_columns[0]).having(having)
    expression = compiler.condition(root, top=True)
    source: FromClause = profiles
    for joined, on in compiler.joins:
        source = source.outerjoin(joined, on)
    return (
        select(profiles.c.id.label("profile_id"))
        .select_from(source)
        .where(profiles.c.workspace_id == workspace_id, expression)
    )
