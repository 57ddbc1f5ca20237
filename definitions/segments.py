"""The segment condition language, and its in-memory evaluation.

A segment is a JSON tree of conditions, discriminated by `type`:

- groups: `all` (every condition), `any` (at least one), `not` (negation);
- `trait`: a profile trait at a dot path, compared with an operator;
- `event`: how many times the person did an event (with property filters)
  in a window; `count = 0` means "has not done";
- `segment`: member / not member of another segment;
- `email`: a delivery or engagement event (`Email Opened`, ...) for a
  campaign or any;
- `topic`: subscribed to (or opted out of) a subscription topic — a
  person is subscribed to every topic they have not left.

The same definitions are compiled to SQL for set evaluation
(`segments/compiler.py`) and evaluated here for one profile (`matches`).
Both follow one set of rules, stated once:

- A path that is missing and a JSON `null` both count as "no value".
- `eq` compares JSON values (the string "5" is not the number 5; 5 = 5.0);
  `neq` is its negation and so holds when there is no value.
- `gt`/`gte`/`lt`/`lte` hold only for a number compared with a number.
- `contains`: a substring of a string (ASCII case-insensitive), or an
  element (exactly equal) of an array. `starts_with`: a string prefix,
  ASCII case-insensitive.
- `in`: equal (as `eq`) to one of the listed values.
- `before` / `after` / `within_last`: the value is a string starting with a
  calendar date `YYYY-MM-DD`; that date is compared (day granularity, as
  written). `within_last N` holds for dates from N days before today to
  today, inclusive.
- Event windows: `last N days|hours` is [now - N, now]; `from` / `to` is
  [from, to). An event condition counts matching events and compares the
  count (`>=`, `<=`, `=`, `>`, `<`).

This module imports only pydantic and the standard library, so workflow
code can use it inside Temporal's sandbox.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from definitions.events import SystemEvent, email_event
from definitions.limits import UtcDatetime
from definitions.topics import TopicKey

MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_IN_VALUES = 1000
MAX_PROPERTY_FILTERS = 20

_PATH = r"^[A-Za-z_][A-Za-z0-9_\-$]*(\.[A-Za-z_][A-Za-z0-9_\-$]*){0,9}$"
Path = Annotated[str, Field(pattern=_PATH, max_length=255, examples=["plan", "address.city"])]
Scalar = StrictStr | StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
DATE_PREFIX = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Op(StrEnum):
    """Comparison operators of trait conditions and property filters."""

    eq = "eq"
    neq = "neq"
    gt = "gt"
    gte = "gte"
    lt = "lt"
    lte = "lte"
    contains = "contains"
    starts_with = "starts_with"
    in_ = "in"
    exists = "exists"
    not_exists = "not_exists"
    before = "before"
    after = "after"
    within_last = "within_last"


NUMERIC_OPS = {Op.gt, Op.gte, Op.lt, Op.lte}
TEXT_OPS = {Op.contains, Op.starts_with}
DATE_OPS = {Op.before, Op.after}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_Strict):
    """`path op value`: shared by trait conditions and event property filters."""

    path: Path
    op: Op
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Comparison:
        op, value = self.op, self.value
        if op in (Op.exists, Op.not_exists):
            if value is not None:
                raise ValueError(f"{op.value} takes no value")
        elif op == Op.in_:
            if not isinstance(value, list) or not value:
                raise ValueError("in takes a non-empty list of values")
            if len(value) > MAX_IN_VALUES:
                raise ValueError(f"in takes at most {MAX_IN_VALUES} values")
        elif isinstance(value, list) or value is None:
            raise ValueError(f"{op.value} takes one value")
        elif op in NUMERIC_OPS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{op.value} compares numbers: give a number")
        elif op in TEXT_OPS:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{op.value} takes a non-empty string")
        elif op in DATE_OPS:
            if not isinstance(value, str) or not _parse_date(value):
                raise ValueError(f"{op.value} takes a date, YYYY-MM-DD")
        elif op == Op.within_last and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36500
        ):
            raise ValueError("within_last takes a number of days (0 to 36500)")
        return self

    @property
    def keys(self) -> tuple[str, ...]:
        """The path split into keys."""
        return tuple(self.path.split("."))


def _parse_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if DATE_PREFIX.match(value) else None
    except ValueError:
        return None


class TraitCondition(Comparison):
    """A profile trait, e.g. `{"type": "trait", "path": "plan", "op": "eq", "value": "pro"}`."""

    type: Literal["trait"]


class PropertyFilter(Comparison):
    """A filter on an event's properties (same operators as traits)."""


class Window(_Strict):
    """When events count: the last N days/hours, or between two instants."""

    last: Annotated[int, Field(ge=1, le=36500)] | None = None
    unit: Literal["days", "hours"] = "days"
    from_: UtcDatetime | None = Field(None, alias="from")
    to: UtcDatetime | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_form(self) -> Window:
        ranged = self.from_ is not None or self.to is not None
        if (self.last is None) == (not ranged):
            raise ValueError("give either last (with unit) or from / to")
        if self.from_ and self.to and _utc(self.from_) >= _utc(self.to):
            raise ValueError("from must be before to")
        return self

    def bounds(self, now: datetime) -> tuple[datetime | None, datetime | None, bool]:
        """(lower, upper, upper_inclusive) in UTC; None where unbounded."""
        if self.last is not None:
            span = timedelta(days=self.last) if self.unit == "days" else timedelta(hours=self.last)
            return now - span, now, True
        return (_utc(self.from_) if self.from_ else None), (_utc(self.to) if self.to else None), False


class Count(_Strict):
    """How many matching events: `{"op": ">=", "value": 1}`; `= 0` is "has not done"."""

    op: Literal[">=", "<=", "=", ">", "<"] = ">="
    value: Annotated[int, Field(ge=0, le=1_000_000)] = 1

    def holds(self, n: int) -> bool:
        """Whether a count of `n` satisfies this."""
        return {
            ">=": n >= self.value,
            "<=": n <= self.value,
            "=": n == self.value,
            ">": n > self.value,
            "<": n < self.value,
        }[self.op]


class EventCondition(_Strict):
    """The person did `name` (matching `where`) a number of times in `within`."""

    type: Literal["event"]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    where: Annotated[list[PropertyFilter], Field(max_length=MAX_PROPERTY_FILTERS)] = []
    count: Count = Count()
    within: Window | None = None


class EmailAction(StrEnum):
    """Email events the delivery layer writes."""

    sent = "sent"
    delivered = "delivered"
    opened = "opened"
    clicked = "clicked"
    bounced = "bounced"
    complained = "complained"
    unsubscribed = "unsubscribed"

    @property
    def event_name(self) -> str:
        """The event this action is stored as, e.g. `Email Opened`."""
        return email_event(self.value).value


class EmailCondition(_Strict):
    """At least one email event of `action`, for `campaign_id` or any, in `within`."""

    type: Literal["email"]
    action: EmailAction
    campaign_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    within: Window | None = None

    def as_event(self) -> EventCondition:
        """The equivalent event condition."""
        where = (
            [PropertyFilter(path="campaign_id", op=Op.eq, value=self.campaign_id)] if self.campaign_id else []
        )
        return EventCondition(type="event", name=self.action.event_name, where=where, within=self.within)


class SegmentCondition(_Strict):
    """Member (or not) of another segment, as of that segment's last refresh."""

    type: Literal["segment"]
    segment_id: uuid.UUID
    op: Literal["member", "not_member"] = "member"


class TopicCondition(_Strict):
    """Subscribed to a topic (`subscribed: true`, the default), or opted out
    of it (`subscribed: false`), e.g. `{"type": "topic", "topic":
    "newsletter", "subscribed": false}`. Reads the person's opt-outs now
    (an address unsubscribed from all email is a separate fact: the
    `email` condition with `unsubscribed`)."""

    type: Literal["topic"]
    topic: TopicKey
    subscribed: StrictBool = True


# Events that change what a topic condition reads (segments re-check on them).
TOPIC_EVENTS = (SystemEvent.TOPIC_UNSUBSCRIBED.value, SystemEvent.TOPIC_RESUBSCRIBED.value)


class AllGroup(_Strict):
    """Every condition holds (an empty list always holds)."""

    type: Literal["all"]
    conditions: Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)]


class AnyGroup(_Strict):
    """At least one condition holds (an empty list never holds)."""

    type: Literal["any"]
    conditions: Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)]


class NotGroup(_Strict):
    """The condition does not hold."""

    type: Literal["not"]
    condition: Condition


Condition = Annotated[
    AllGroup
    | AnyGroup
    | NotGroup
    | TraitCondition
    | EventCondition
    | SegmentCondition
    | EmailCondition
    | TopicCondition,
    Field(discriminator="type"),
]
for _model in (AllGroup, AnyGroup, NotGroup):
    _model.model_rebuild()


class SegmentDefinition(_Strict):
    """The root of a segment: one condition (usually a group)."""

    root: Condition

    @model_validator(mode="after")
    def _bounded(self) -> SegmentDefinition:
        depth, count = _measure(self.root)
        if depth > MAX_DEPTH:
            raise ValueError(f"conditions nest {depth} levels deep; at most {MAX_DEPTH}")
        if count > MAX_CONDITIONS:
            raise ValueError(f"{count} conditions; at most {MAX_CONDITIONS}")
        return self


def _measure(node: Any, depth: int = 1) -> tuple[int, int]:
    if isinstance(node, AllGroup | AnyGroup):
        children = [_measure(c, depth + 1) for c in node.conditions]
        return max([depth, *(d for d, _ in children)]), 1 + sum(n for _, n in children)
    if isinstance(node, NotGroup):
        d, n = _measure(node.condition, depth + 1)
        return d, n + 1
    return depth, 1


def walk(node: Any) -> Iterator[Any]:
    """Every condition of a tree, depth first."""
    yield node
    if isinstance(node, AllGroup | AnyGroup):
        for child in node.conditions:
            yield from walk(child)
    elif isinstance(node, NotGroup):
        yield from walk(node.condition)


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What a segment reads: event names, top-level trait keys, segments."""

    event_names: frozenset[str]
    trait_keys: frozenset[str]
    segment_ids: frozenset[uuid.UUID]


def dependencies(root: Any) -> Dependencies:
    """The events, traits and segments a definition depends on."""
    names: set[str] = set()
    traits: set[str] = set()
    segments: set[uuid.UUID] = set()
    for node in walk(root):
        if isinstance(node, EventCondition):
            names.add(node.name)
        elif isinstance(node, EmailCondition):
            names.add(node.action.event_name)
        elif isinstance(node, TraitCondition):
            traits.add(node.keys[0])
        elif isinstance(node, SegmentCondition):
            segments.add(node.segment_id)
        elif isinstance(node, TopicCondition):
            names.update(TOPIC_EVENTS)
    return Dependencies(frozenset(names), frozenset(traits), frozenset(segments))


# -- evaluation for one profile -------------------------------------------


class _Missing:
    __slots__ = ()


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class EventFact:
    """One stored event, as far as segments look at it."""

    name: str
    properties: dict[str, Any]
    occurred_at: datetime


@dataclass(slots=True)
class ProfileFacts:
    """Everything a segment can ask about one profile."""

    traits: dict[str, Any]
    events: list[EventFact] = field(default_factory=list)
    segment_ids: set[uuid.UUID] = field(default_factory=set)
    topic_optouts: set[str] = field(default_factory=set)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def get_path(document: Any, keys: Iterable[str]) -> Any:
    """The JSON value at `keys`, or MISSING (only objects are descended)."""
    current = document
    for key in keys:
        if not isinstance(current, dict) or key not in current:
            return MISSING
        current = current[key]
    return current


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values as PostgreSQL's jsonb defines it."""
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None and b is None:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return False


def fold(text: str) -> str:
    """ASCII-only lower case (the same in SQL, whatever the locale)."""
    return text.translate(_ASCII_LOWER)


def compare(comparison: Comparison, document: Any, today: date) -> bool:
    """Whether `document` (traits or event properties) satisfies the comparison."""
    value = get_path(document, comparison.keys)
    present = value is not MISSING and value is not None
    op, target = comparison.op, comparison.value
    if op == Op.exists:
        return present
    if op == Op.not_exists:
        return not present
    if op == Op.eq:
        return value is not MISSING and json_equal(value, target)
    if op == Op.neq:
        return not (value is not MISSING and json_equal(value, target))
    if op == Op.in_:
        return value is not MISSING and any(json_equal(value, t) for t in target)  # type: ignore[union-attr]
    if op in NUMERIC_OPS:
        if not _is_number(value):
            return False
        return {
            Op.gt: value > target,
            Op.gte: value >= target,
            Op.lt: value < target,
            Op.lte: value <= target,
        }[op]  # type: ignore[operator]
    if op == Op.contains:
        if isinstance(value, str):
            return fold(target) in fold(value)  # type: ignore[arg-type]
        if isinstance(value, list):
            return any(isinstance(v, str) and v == target for v in value)
        return False
    if op == Op.starts_with:
        return isinstance(value, str) and fold(value).startswith(fold(target))  # type: ignore[arg-type]
    # Date operators: the first ten characters of a date string.
    if not isinstance(value, str) or not DATE_PREFIX.match(value):
        return False
    day = value[:10]
    if op == Op.before:
        return day < target[:10]  # type: ignore[index]
    if op == Op.after:
        return day > target[:10]  # type: ignore[index]
    cutoff = (today - timedelta(days=target)).isoformat()  # type: ignore[arg-type]
    return cutoff <= day <= today.isoformat()


def count_events(condition: EventCondition, events: Iterable[EventFact], now: datetime) -> int:
    """How many events satisfy the condition's name, window and filters."""
    lower, upper, upper_inclusive = condition.within.bounds(now) if condition.within else (None, None, False)
    today = now.date()
    n = 0
    for event in events:
        if event.name != condition.name:
            continue
        at = _utc(event.occurred_at)
        if lower is not None and at < lower:
            continue
        if upper is not None and (at > upper if upper_inclusive else at >= upper):
            continue
        if all(compare(f, event.properties, today) for f in condition.where):
            n += 1
    return n


def matches(node: Any, facts: ProfileFacts, now: datetime) -> bool:
    """Evaluate a condition tree for one profile at time `now` (UTC)."""
    if isinstance(node, SegmentDefinition):
        node = node.root
    if isinstance(node, AllGroup):
        return all(matches(c, facts, now) for c in node.conditions)
    if isinstance(node, AnyGroup):
        return any(matches(c, facts, now) for c in node.conditions)
    if isinstance(node, NotGroup):
        return not matches(node.condition, facts, now)
    if isinstance(node, TraitCondition):
        return compare(node, facts.traits, now.date())
    if isinstance(node, EmailCondition):
        node = node.as_event()
    if isinstance(node, EventCondition):
        return node.count.holds(count_events(node, facts.events, now))
    if isinstance(node, SegmentCondition):
        member = node.segment_id in facts.segment_ids
        return member if node.op == "member" else not member
    if isinstance(node, TopicCondition):
        return (node.topic not in facts.topic_optouts) == node.subscribed
    raise TypeError(f"not a condition: {node!r}")
