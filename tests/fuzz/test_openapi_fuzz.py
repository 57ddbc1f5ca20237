"""Fuzz stage: schemathesis over both OpenAPI specs; no request may get a 5xx.

Every documented operation of the management API and of the tracking API
is called with generated data: valid-by-schema (positive) and invalid
(negative) bodies and parameters, with a real secret or public key, and with
ids of real objects (a profile, a segment, a template, providers, a
suppression, a message, a topic) in path parameters, plus a few generated path
values. Any 5xx, a dropped connection, or a JSON 4xx without
`{"error", "detail"}` fails the test, listing each failing operation with
a curl line that reproduces it.

Bounded and repeatable: a fixed number of examples per operation and
Hypothesis derandomized (the same inputs on every run), no example
database. The management API under test runs on its own Temporal task
queue that no worker polls, so generated sends and refreshes never execute
(no generated provider is ever called).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from core.settings import Settings
from tests.support.servers import serve

# Per operation. FUZZ_SCALE multiplies them for a longer bug hunt
# (`FUZZ_SCALE=10 ./mp test tests/fuzz`); the default keeps the stage near a minute.
_SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
POSITIVE_EXAMPLES = 25 * _SCALE
NEGATIVE_EXAMPLES = 10 * _SCALE
GENERATED_PATH_EXAMPLES = 8 * _SCALE
SENDER = "fuzz@example.com"


@dataclass
class Findings:
    """What went wrong, per operation."""

    failures: list[str] = field(default_factory=list)
    calls: int = 0


def _error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """A JSON 4xx carries `{"error": ..., "detail": ...}`."""
    if 400 <= response.status_code < 500 and "json" in (response.headers.get("content-type") or [""])[0]:
        body = response.json()
        assert isinstance(body, dict) and {"error", "detail"} <= set(body), (
            f"4xx without error/detail: {body}"
        )
    return None


def _fuzz_operation(
    operation: Any,
    base_url: str,
    headers: dict[str, str],
    path_parameters: dict[str, str],
    findings: Findings,
) -> None:
    """Run the three passes of one operation; record failures."""
    names = {p.name for p in operation.path_parameters}
    fixed_path = {name: value for name, value in path_parameters.items() if name in names}
    # Long waits (segment refresh, sends) would only idle: nothing runs them.
    query = {p.name: 0 for p in operation.query if p.name == "wait"}
    passes: list[tuple[str, Any, int]] = [
        (
            "positive",
            operation.as_strategy(path_parameters=fixed_path, headers=headers, query=query),
            POSITIVE_EXAMPLES,
        ),
        (
            "negative",
            operation.as_strategy(
                GenerationMode.NEGATIVE, path_parameters=fixed_path, headers=headers, query=query
            ),
            NEGATIVE_EXAMPLES,
        ),
    ]
    if names:
        passes.append(
            ("generated path", operation.as_strategy(headers=headers, query=query), GENERATED_PATH_EXAMPLES)
        )
    for label, strategy, examples in passes:

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            findings.calls += 1
            response = case.call(base_url=base_url, timeout=30)
            case.validate_response(response, checks=[not_a_server_error, _error_shape])

        try:
            run()
        except Unsatisfiable:
            # Nothing left to make invalid (every parameter is fixed above).
            continue
        except (AssertionError, OSError, ValueError, BaseExceptionGroup) as exc:  # report all, not the first
            findings.failures.append(f"{operation.label} ({label}): {exc}")


def fuzz(spec: dict[str, Any], base_url: str, headers: dict[str, str], path_parameters: dict) -> Findings:
    """Fuzz every operation of `spec` (deletes last, so ids stay real)."""
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    findings = Findings()
    for operation in operations:
        params = path_parameters.get(operation.path, path_parameters.get("*", {}))
        _fuzz_operation(operation, base_url, headers, params, findings)
    return findings


def _report(findings: Findings) -> str:
    return f"{len(findings.failures)} failing operation passes:\n\n" + "\n\n".join(findings.failures)


@pytest.fixture(scope="module")
async def fuzz_api(settings: Settings) -> AsyncIterator[str]:
    """The management API on a task queue no worker polls."""
    from api.app import create_app

    isolated = settings.model_copy(update={"temporal_task_queue": f"fuzz-{uuid.uuid4().hex[:8]}"})
    async with serve(create_app(isolated)) as url:
        yield url


async def _created(client: httpx.AsyncClient, path: str, body: dict, **params: Any) -> dict:
    r = await client.post(path, json=body, params=params)
    assert r.status_code in (201, 202), r.text
    return r.json()


async def _real_objects(client: httpx.AsyncClient) -> dict[str, str]:
    profile = await _created(
        client,
        "/api/v1/profiles",
        {"email": "fuzzed@example.com", "external_id": "fuzzed", "traits": {"a": 1}},
    )
    segment = await _created(
        client,
        "/api/v1/segments",
        {"name": "fuzzed", "definition": {"type": "trait", "path": "a", "op": "eq", "value": 1}},
    )
    template = await _created(
        client,
        "/api/v1/templates",
        {"name": "fuzzed", "subject": "s", "html": "<p>h</p>", "from_email": SENDER},
    )
    ses = await _created(
        client, "/api/v1/providers", {"name": "ses", "kind": "ses", "enabled": False, "settings": {}}
    )
    sendgrid = await _created(
        client,
        "/api/v1/providers",
        {"name": "sendgrid", "kind": "sendgrid", "enabled": False, "credentials": {"api_key": "SG.x"}},
    )
    suppression = await _created(client, "/api/v1/suppressions", {"email": "suppressed@example.com"})
    topic = await _created(client, "/api/v1/topics", {"key": "fuzzed", "name": "fuzzed"})
    message = await _created(
        client, "/api/v1/messages", {"template_id": template["id"], "email": "fuzzed@example.com"}, wait=0
    )
    # An active flow, so enrollment requests get past the lifecycle check.
    flow = await _created(
        client,
        "/api/v1/flows",
        {
            "name": "fuzzed",
            "definition": {
                "trigger": {"type": "api"},
                "start": "hold",
                "nodes": [{"id": "hold", "type": "wait", "seconds": 60}],
            },
        },
    )
    activated = await client.post(f"/api/v1/flows/{flow['id']}/activate")
    assert activated.status_code == 200, activated.text
    # A draft campaign with an A/B test, so its routes meet a real object.
    campaign = await _created(
        client,
        "/api/v1/campaigns",
        {
            "name": "fuzzed",
            "audience": {"segment_ids": [segment["id"]]},
            "content": {"subject": "s", "html": "<p>h</p>", "from_email": SENDER},
            "ab_test": {
                "variants": [{"name": "A"}, {"name": "B", "subject": "t"}],
                "test_percent": 20,
                "wait_seconds": 3600,
                "metric": "open_rate",
            },
        },
    )
    return {
        "campaign_id": campaign["id"],
        "flow_id": flow["id"],
        "profile_id": profile["id"],
        "segment_id": segment["id"],
        "template_id": template["id"],
        "provider_id": ses["id"],
        "sendgrid_provider_id": sendgrid["id"],
        "email": suppression["email"],
        "message_id": message["id"],
        "key": topic["key"],
    }


async def _run(spec_url: str, base_url: str, headers: dict[str, str], ids: Callable[[], dict]) -> Findings:
    async with httpx.AsyncClient() as client:
        spec = (await client.get(spec_url)).json()
    # The fuzzer speaks blocking HTTP; the servers run on this event loop.
    return await asyncio.to_thread(fuzz, spec, base_url, headers, ids())


async def test_management_api_never_answers_5xx(fuzz_api, workspace):
    headers = {"Authorization": f"Bearer {workspace.secret_key}"}
    async with httpx.AsyncClient(base_url=fuzz_api, headers=headers, timeout=30) as client:
        ids = await _real_objects(client)
    findings = await _run(f"{fuzz_api}/openapi.json", fuzz_api, headers, lambda: {"*": ids})
    assert findings.calls > 300
    assert not findings.failures, _report(findings)


async def test_tracking_api_never_answers_5xx(fuzz_api, tracking_app, workspace):
    headers = {"Authorization": f"Bearer {workspace.secret_key}"}
    async with httpx.AsyncClient(base_url=fuzz_api, headers=headers, timeout=30) as client:
        ids = await _real_objects(client)
    base_url = tracking_app.state.base_url
    path_ids = {
        "*": ids,
        "/webhooks/sendgrid/{provider_id}": {"provider_id": ids["sendgrid_provider_id"]},
    }
    public = {"Authorization": f"Bearer {workspace.public_key}"}
    writer = tracking_app.state.services.writer
    committed_before = writer.requests_committed
    findings = await _run(f"{base_url}/openapi.json", base_url, public, lambda: path_ids)
    assert findings.calls > 100
    # Generated calls went through the ASGI fast path to the writer.
    assert writer.requests_committed - committed_before >= 5
    assert not findings.failures, _report(findings)


async def test_the_tracking_spec_covers_the_fast_path_routes(tracking_app):
    # The fuzzer only reaches what the spec documents: the ingestion
    # endpoints the ASGI fast path answers must all be in it.
    from tracking.ingest import ENDPOINTS
    from tracking.segment import SHORT_PATHS

    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        spec = (await client.get("/openapi.json")).json()
    documented = {p for p, ops in spec["paths"].items() if "post" in ops}
    # analytics.js's short paths are other names of documented endpoints
    # (the very same objects), so fuzzing those covers them.
    assert {path for path in ENDPOINTS if path not in SHORT_PATHS} <= documented
    assert all(
        ENDPOINTS[alias] is ENDPOINTS[path] and path in documented for alias, path in SHORT_PATHS.items()
    )
