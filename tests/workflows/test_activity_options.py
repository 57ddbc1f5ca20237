"""Every activity call in a workflow states a start-to-close timeout and a
retry policy (never the SDK's unlimited retries by default), read from the
workflow modules' source so a new call cannot forget them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CALLS = {"execute_activity", "start_activity", "execute_local_activity", "start_local_activity"}
REQUIRED = {"start_to_close_timeout", "retry_policy"}


def _activity_calls() -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in CALLS
            ):
                found.append((f"{path.name}:{node.lineno}", node))
    return found


def test_workflows_call_activities():
    assert len(_activity_calls()) >= 5  # the scan finds the calls (it is not vacuous)


@pytest.mark.parametrize(("where", "call"), _activity_calls(), ids=[w for w, _ in _activity_calls()])
def test_activity_call_has_a_timeout_and_a_retry_policy(where: str, call: ast.Call):
    given = {keyword.arg for keyword in call.keywords}
    assert None not in given, f"{where}: options passed through **kwargs cannot be checked"
    assert given >= REQUIRED, f"{where}: missing {sorted(REQUIRED - given)}"
