"""The flow graph language: what parses, what validation names, and the
deterministic split."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from definitions.flows import FlowGraph, listened_events, split_choice, validate_graph

TEMPLATE = "00000000-0000-7000-8000-000000000001"


def _graph(nodes: list[dict], trigger: dict | None = None, start: str = "a", **settings) -> FlowGraph:
    return FlowGraph.model_validate(
        {
            "trigger": trigger or {"type": "event", "name": "Signed Up"},
            "start": start,
            "nodes": nodes,
            "settings": settings,
        }
    )


def test_abandoned_cart_is_sound_and_listens_for_its_waits():
    graph = _graph(
        [
            {"id": "a", "type": "wait_for_event", "name": "Order Completed", "match_key": True,
             "timeout_seconds": 3600, "on_event": "done", "on_timeout": "mail"},
            {"id": "mail", "type": "send_email", "template_id": TEMPLATE, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
        trigger={"type": "event", "name": "Cart Updated", "enrollment_key": "properties.cart_id"},
        goal={"name": "Order Completed"},
        exit_events=[{"name": "Unsubscribed Everything"}],
    )  # fmt: skip
    assert validate_graph(graph) == []
    assert listened_events(graph) == {"Order Completed", "Unsubscribed Everything"}


@pytest.mark.parametrize(
    ("nodes", "start", "loc", "needle"),
    [
        ([{"id": "a", "type": "wait", "seconds": 5, "next": "a"}], "a", "nodes.a", "cycle"),
        ([{"id": "a", "type": "wait", "seconds": 5, "next": "zz"}], "a", "nodes.a", "no node 'zz'"),
        ([{"id": "a", "type": "exit"}, {"id": "b", "type": "exit"}], "a", "nodes.b", "not reachable"),
        ([{"id": "a", "type": "exit"}], "nope", "start", "no node"),
        ([{"id": "a", "type": "exit"}, {"id": "a", "type": "exit"}], "a", "nodes.a", "used twice"),
        (
            [{"id": "a", "type": "wait_for_event", "name": "X", "match_key": True, "timeout_seconds": 9}],
            "a",
            "nodes.a",
            "enrollment_key",
        ),
    ],
)
def test_structural_problems_name_the_node(nodes, start, loc, needle):
    problems = validate_graph(_graph(nodes, start=start))
    assert any(p.loc == loc and needle in p.msg for p in problems), problems


@pytest.mark.parametrize(
    "bad",
    [
        {"trigger": {"type": "event", "name": "X"}, "start": "a", "nodes": [{"id": "a", "type": "teleport"}]},
        {"trigger": {"type": "event", "name": "X"}, "start": "a", "nodes": []},
        {"trigger": {"type": "nope"}, "start": "a", "nodes": [{"id": "a", "type": "exit"}]},
        {
            "trigger": {"type": "event", "name": "X"},
            "start": "a",
            "nodes": [{"id": "a", "type": "split", "paths": [{"percent": 60}, {"percent": 60}]}],
        },
        {
            "trigger": {"type": "event", "name": "X", "enrollment_key": "cart_id"},
            "start": "a",
            "nodes": [{"id": "a", "type": "exit"}],
        },
        {
            "trigger": {"type": "event", "name": "X"},
            "start": "a",
            "nodes": [{"id": f"n{i}", "type": "exit"} for i in range(101)],
        },
        {
            "trigger": {"type": "event", "name": "X"},
            "start": "a",
            "nodes": [{"id": "a", "type": "exit"}],
            "settings": {"reentry": "after"},
        },
    ],
)
def test_bad_documents_do_not_parse(bad):
    with pytest.raises(ValidationError):
        FlowGraph.model_validate(bad)


def test_split_is_deterministic_and_follows_the_percentages():
    picks = [split_choice(f"enrollment-{n}", "s", [20, 30, 50]) for n in range(5000)]
    assert picks == [split_choice(f"enrollment-{n}", "s", [20, 30, 50]) for n in range(5000)]
    shares = Counter(picks)
    assert abs(shares[0] / 5000 - 0.2) < 0.03
    assert abs(shares[1] / 5000 - 0.3) < 0.03
    assert abs(shares[2] / 5000 - 0.5) < 0.03
    assert split_choice("x", "s", [0, 100]) == 1
