"""The flow graph language: a trigger, nodes joined by named edges, and
the flow's settings. Pure (pydantic + stdlib), so the API validates with it
and `FlowRunWorkflow` interprets it inside Temporal's sandbox; conditions
and property filters are the segment language's (`definitions/segments.py`).

A flow is a JSON document:

    {"trigger": {"type": "event", "name": "Cart Updated", "enrollment_key": "properties.cart_id"},
     "start": "wait_buy",
     "nodes": [
       {"id": "wait_buy", "type": "wait_for_event", "name": "Order Completed", "match_key": true,
        "timeout_seconds": 3600, "on_event": "done", "on_timeout": "remind"},
       {"id": "remind", "type": "send_email", "template_id": "…", "next": "done"},
       {"id": "done", "type": "exit"}]}

Rules, stated once and checked by `validate_graph` (each problem names its
node): one trigger; node ids unique; every edge points at a node; every node
is reachable from `start`; no cycles (so every path ends); a node without
an outgoing edge ends the run (`exit` says so explicitly); at most
`MAX_NODES` nodes. Split percentages add up to 100. Templates and segments
a flow names must exist in the workspace: the service checks that, not
this module.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from definitions.segments import Condition, Path, PropertyFilter
from definitions.topics import TopicKey

MAX_NODES = 100
MAX_BRANCHES = 10
MAX_SPLIT_PATHS = 10
MAX_WAIT_SECONDS = 366 * 24 * 3600
MAX_WEBHOOK_ATTEMPTS = 10
MAX_EXIT_EVENTS = 10
MAX_PAYLOAD_KEYS = 100

NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
EventName = Annotated[str, Field(min_length=1, max_length=255)]
TimeOfDay = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
_KEY_PATH = re.compile(r"^properties(\.[A-Za-z_][A-Za-z0-9_\-$]*){1,9}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- triggers -------------------------------------------------------------------


class EventTrigger(_Strict):
    """An event the person does (tracked or system), with property filters.
    `enrollment_key` (e.g. `properties.cart_id`) lets one person hold one
    enrollment per key value; without it, one at a time."""

    type: Literal["event"]
    name: EventName
    where: Annotated[list[PropertyFilter], Field(max_length=20)] = []
    enrollment_key: str | None = None

    @model_validator(mode="after")
    def _key_path(self) -> EventTrigger:
        if self.enrollment_key is not None and not _KEY_PATH.match(self.enrollment_key):
            raise ValueError("enrollment_key is a path into the event, e.g. properties.cart_id")
        return self


class SegmentTrigger(_Strict):
    """The person enters (or exits) a segment."""

    type: Literal["segment"]
    segment_id: uuid.UUID
    on: Literal["entered", "exited"] = "entered"


class DateTrigger(_Strict):
    """A date trait (e.g. `trial_ends_at`) plus `offset_days`, at
    `time_of_day` in the person's timezone; `yearly` repeats on the
    anniversary (birthdays)."""

    type: Literal["date"]
    trait: Path
    offset_days: Annotated[int, Field(ge=-366, le=366)] = 0
    time_of_day: TimeOfDay = "09:00"
    yearly: bool = False


class ApiTrigger(_Strict):
    """Enrolled through `POST /api/v1/flows/:id/enroll` (or a bulk segment enrollment)."""

    type: Literal["api"]


Trigger = Annotated[EventTrigger | SegmentTrigger | DateTrigger | ApiTrigger, Field(discriminator="type")]


# -- nodes ----------------------------------------------------------------------


class _Node(_Strict):
    id: NodeId


class WaitNode(_Node):
    """Wait a fixed time."""

    type: Literal["wait"]
    seconds: Annotated[int, Field(ge=1, le=MAX_WAIT_SECONDS)]
    next: NodeId | None = None


class WaitUntilNode(_Node):
    """Wait until a time of day in the person's timezone (trait `timezone`,
    IANA name; the workspace default otherwise), or until a date trait plus
    `offset_days` (at `time_of_day`)."""

    type: Literal["wait_until"]
    time_of_day: TimeOfDay
    trait: Path | None = None
    offset_days: Annotated[int, Field(ge=-366, le=366)] = 0
    next: NodeId | None = None


class WaitForEventNode(_Node):
    """Wait for an event (name + filters; with `match_key`, only events
    whose enrollment-key property equals the trigger's) up to a timeout."""

    type: Literal["wait_for_event"]
    name: EventName
    where: Annotated[list[PropertyFilter], Field(max_length=20)] = []
    match_key: bool = False
    timeout_seconds: Annotated[int, Field(ge=1, le=MAX_WAIT_SECONDS)]
    on_event: NodeId | None = None
    on_timeout: NodeId | None = None


class Branch(_Strict):
    """One ordered branch: taken when `condition` holds for the person now."""

    condition: Condition
    next: NodeId | None = None


class BranchNode(_Node):
    """The first branch whose condition holds, else `otherwise`."""

    type: Literal["branch"]
    branches: Annotated[list[Branch], Field(min_length=1, max_length=MAX_BRANCHES)]
    otherwise: NodeId | None = None


class SplitPath(_Strict):
    """A share of enrollments, in percent."""

    percent: Annotated[int, Field(ge=0, le=100)]
    next: NodeId | None = None


class SplitNode(_Node):
    """Random split, deterministic per enrollment (`split_choice`)."""

    type: Literal["split"]
    paths: Annotated[list[SplitPath], Field(min_length=2, max_length=MAX_SPLIT_PATHS)]

    @model_validator(mode="after")
    def _hundred(self) -> SplitNode:
        total = sum(p.percent for p in self.paths)
        if total != 100:
            raise ValueError(f"split percentages add up to {total}, not 100")
        return self


class EmailOverrides(_Strict):
    """Per-node changes to the template."""

    subject: Annotated[str, Field(max_length=998)] | None = None
    from_name: Annotated[str, Field(max_length=255)] | None = None
    from_email: Annotated[str, Field(max_length=320)] | None = None
    reply_to: Annotated[str, Field(max_length=320)] | None = None


class SendEmailNode(_Node):
    """Send a template to the person through the send path (suppression,
    frequency cap unless `transactional`, quiet hours, router, tracking).
    With a `topic` (a topic's key), a person who left that topic is not
    sent to, and the email's one-click unsubscribe leaves that topic only."""

    type: Literal["send_email"]
    template_id: uuid.UUID
    overrides: EmailOverrides = EmailOverrides()
    transactional: bool = False
    topic: TopicKey | None = None
    next: NodeId | None = None


class UpdateProfileNode(_Node):
    """Merge-patch the person's traits (null removes a key)."""

    type: Literal["update_profile"]
    traits: Annotated[dict[str, Any], Field(max_length=MAX_PAYLOAD_KEYS)]
    next: NodeId | None = None


class WebhookNode(_Node):
    """POST the person, the trigger and the payload as JSON, signed with
    HMAC-SHA256; retried up to `max_attempts`, then `on_error` (or the
    enrollment fails visibly when there is none)."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://", max_length=2048)]
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=MAX_WEBHOOK_ATTEMPTS)] = 5
    next: NodeId | None = None
    on_error: NodeId | None = None


class ExitNode(_Node):
    """End the run."""

    type: Literal["exit"]


Node = Annotated[
    WaitNode
    | WaitUntilNode
    | WaitForEventNode
    | BranchNode
    | SplitNode
    | SendEmailNode
    | UpdateProfileNode
    | WebhookNode
    | ExitNode,
    Field(discriminator="type"),
]


# -- settings -------------------------------------------------------------------


class EventMatch(_Strict):
    """An event name with property filters (goals, exit events)."""

    name: EventName
    where: Annotated[list[PropertyFilter], Field(max_length=20)] = []


class Reentry(StrEnum):
    """May a person enter again? Enforced in PostgreSQL (enrollments)."""

    ONCE = "once"
    ALWAYS = "always"
    AFTER = "after"


class FrequencyCap(_Strict):
    """At most `max_emails` marketing emails per person per `period_seconds`,
    across all flows and campaigns; a capped send is skipped or delayed."""

    max_emails: Annotated[int, Field(ge=1, le=1000)]
    period_seconds: Annotated[int, Field(ge=3600, le=366 * 24 * 3600)]
    mode: Literal["skip", "delay"] = "skip"


class QuietHours(_Strict):
    """No sends between `start` and `end` in the person's timezone."""

    start: TimeOfDay
    end: TimeOfDay


class FlowSettings(_Strict):
    """Re-entry, goal, exits, frequency cap and quiet hours."""

    reentry: Reentry = Reentry.ONCE
    reentry_after_seconds: Annotated[int, Field(ge=60, le=10 * 366 * 24 * 3600)] | None = None
    goal: EventMatch | None = None
    goal_within_seconds: Annotated[int, Field(ge=60, le=MAX_WAIT_SECONDS)] | None = None
    exit_events: Annotated[list[EventMatch], Field(max_length=MAX_EXIT_EVENTS)] = []
    exit_condition: Condition | None = None
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None

    @model_validator(mode="after")
    def _after_needs_interval(self) -> FlowSettings:
        if (self.reentry == Reentry.AFTER) != (self.reentry_after_seconds is not None):
            raise ValueError("reentry 'after' takes reentry_after_seconds (and only it does)")
        return self


class FlowGraph(_Strict):
    """A flow's definition: one trigger, a start node and the nodes."""

    trigger: Trigger
    start: NodeId
    nodes: Annotated[list[Node], Field(min_length=1, max_length=MAX_NODES)]
    settings: FlowSettings = FlowSettings()


# -- structure ------------------------------------------------------------------


def edges(node: Any) -> Iterator[tuple[str, str]]:
    """(label, target) of a node's outgoing edges; `None` targets end the run."""
    if isinstance(node, WaitForEventNode):
        pairs = [("event", node.on_event), ("timeout", node.on_timeout)]
    elif isinstance(node, BranchNode):
        pairs = [(f"branch:{n}", b.next) for n, b in enumerate(node.branches)]
        pairs.append(("otherwise", node.otherwise))
    elif isinstance(node, SplitNode):
        pairs = [(f"split:{n}", p.next) for n, p in enumerate(node.paths)]
    elif isinstance(node, WebhookNode):
        pairs = [("next", node.next), ("error", node.on_error)]
    elif isinstance(node, ExitNode):
        pairs = []
    else:
        pairs = [("next", node.next)]
    for label, target in pairs:
        if target is not None:
            yield label, target


class GraphProblem(BaseModel):
    """One problem in a graph: where (`nodes.<id>`, `start`, `trigger`) and what."""

    loc: str
    msg: str


def validate_graph(graph: FlowGraph) -> list[GraphProblem]:
    """Structural problems of a parsed graph (empty when it is sound)."""
    problems: list[GraphProblem] = []
    by_id: dict[str, Any] = {}
    for node in graph.nodes:
        if node.id in by_id:
            problems.append(GraphProblem(loc=f"nodes.{node.id}", msg="node id used twice"))
        by_id[node.id] = node
    if graph.start not in by_id:
        problems.append(GraphProblem(loc="start", msg=f"no node {graph.start!r}"))
    for node in graph.nodes:
        for label, target in edges(node):
            if target not in by_id:
                problems.append(
                    GraphProblem(loc=f"nodes.{node.id}", msg=f"edge {label} points at no node {target!r}")
                )
    if problems:
        return problems
    # Reachability and cycles in one depth-first walk from the start.
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node_id: str) -> None:
        state[node_id] = 1
        for _label, target in edges(by_id[node_id]):
            if state.get(target) == 1:
                problems.append(GraphProblem(loc=f"nodes.{node_id}", msg=f"edge to {target!r} makes a cycle"))
            elif target not in state:
                visit(target)
        state[node_id] = 2

    visit(graph.start)
    for node in graph.nodes:
        if node.id not in state:
            problems.append(GraphProblem(loc=f"nodes.{node.id}", msg="not reachable from start"))
    keyed = isinstance(graph.trigger, EventTrigger) and graph.trigger.enrollment_key is not None
    for node in graph.nodes:
        if isinstance(node, WaitForEventNode) and node.match_key and not keyed:
            problems.append(
                GraphProblem(
                    loc=f"nodes.{node.id}", msg="match_key needs an event trigger with enrollment_key"
                )
            )
    return problems


def listened_events(graph: FlowGraph) -> set[str]:
    """Event names a running enrollment may wait for: wait-for-event nodes,
    the goal and exit events."""
    names = {n.name for n in graph.nodes if isinstance(n, WaitForEventNode)}
    if graph.settings.goal is not None:
        names.add(graph.settings.goal.name)
    names.update(e.name for e in graph.settings.exit_events)
    return names


def split_choice(enrollment_id: str, node_id: str, percents: list[int]) -> int:
    """The path an enrollment takes at a split: a hash of (enrollment, node)
    mapped onto the cumulative percentages, so a replay or a retry always
    picks the same path and shares match the percentages over many runs."""
    digest = hashlib.sha256(f"{enrollment_id}:{node_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % 100
    total = 0
    for index, percent in enumerate(percents):
        total += percent
        if point < total:
            return index
    return len(percents) - 1
