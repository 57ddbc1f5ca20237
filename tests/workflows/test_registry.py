"""The registry misses nothing: every `@activity.defn` in activities/ and
every `@workflow.defn` in workflows/ is registered by `worker.registry`
(the worker and the tests register from there), each once."""

from __future__ import annotations

import ast
from pathlib import Path

from worker.registry import WORKFLOWS, build_activities

ROOT = Path(__file__).resolve().parents[2]


def _declared_names(folder: str, decorator: str) -> list[str]:
    """Names given to `@<module>.defn(name=...)` (or the class/function name) in a package."""
    names = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.ClassDef, ast.AsyncFunctionDef, ast.FunctionDef)):
                continue
            for deco in node.decorator_list:
                call = deco if isinstance(deco, ast.Call) else None
                target = call.func if call else deco
                if ast.unparse(target) != f"{decorator}.defn":
                    continue
                given = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
                names.append(given[0] if given else node.name)
    return names


def _registered_name(obj: object, attribute: str) -> str:
    # The definition the SDK keeps on a decorated class or function.
    return getattr(obj, attribute).name


def test_every_workflow_is_registered_once():
    declared = _declared_names("workflows", "workflow")
    registered = [_registered_name(cls, "__temporal_workflow_definition") for cls in WORKFLOWS]
    assert len(declared) >= 7
    assert sorted(registered) == sorted(declared)


async def test_every_activity_is_registered_once(engine, redis_client, settings, dispatcher):
    declared = _declared_names("activities", "activity")
    built = build_activities(engine, redis_client, settings, dispatcher)
    registered = [_registered_name(fn, "__temporal_activity_definition") for fn in built]
    assert len(declared) >= 15
    assert sorted(registered) == sorted(declared)
