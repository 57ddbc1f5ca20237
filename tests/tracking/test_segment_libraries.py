"""Segment's own published libraries, pointed at a running tracking API,
send identify/track/page/screen/group/alias in batches, and everything is
stored: analytics-python (PyPI, gzip on) and @segment/analytics-node (npm,
a devDependency of sdk/, installed by `./mp test`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import pytest
from segment.analytics import Client
from sqlalchemy import text

from tests.support.db import events_of, profiles_of
from tests.support.servers import ROOT

SDK = ROOT / "sdk"


def _expected_names() -> list[str]:
    return sorted(["Order Completed", "Page Viewed", "Screen Viewed", *["Batched"] * 20])


async def _assert_stored(engine, workspace, prefix: str, zone: str) -> None:
    events = await events_of(engine, workspace.workspace_id)
    assert sorted(e["name"] for e in events) == _expected_names()
    assert {e["external_id"] for e in events} == {f"{prefix}-user"}
    by_name = {e["name"]: e for e in events}
    assert by_name["Order Completed"]["properties"] == {"revenue": 42.5}
    assert by_name["Page Viewed"]["properties"]["path"] == "/pricing"
    assert by_name["Screen Viewed"]["type"] == "screen"
    assert all(e["context"]["library"]["name"] for e in events)
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["email"] == f"{prefix}@example.com"
    assert profile["traits"]["plan"] == "pro"
    assert profile["traits"]["timezone"] == zone
    assert profile["traits"][f"group_{prefix}-org"] == {"name": "Acme", "seats": 12, "id": f"{prefix}-org"}
    # The anonymous id and alias's previous id both lead to the profile.
    async with engine.connect() as conn:
        aliases = set(
            (
                await conn.execute(
                    text(
                        "SELECT anonymous_id FROM profile_aliases WHERE workspace_id = :w AND profile_id = :p"
                    ),
                    {"w": workspace.workspace_id, "p": profile["id"]},
                )
            ).scalars()
        )
    assert {f"{prefix}-anon", f"{prefix}-old"} <= aliases


def _python_client_sends(host: str, key: str, prefix: str, errors: list) -> None:
    client = Client(
        key,
        host=host,
        gzip=True,
        upload_size=100,
        upload_interval=0.2,
        max_retries=2,
        on_error=lambda exc, batch: errors.append(repr(exc)),
    )
    user = f"{prefix}-user"
    client.identify(
        user,
        {"email": f"{prefix}@example.com", "plan": "pro"},
        context={"timezone": "Europe/Berlin"},
        anonymous_id=f"{prefix}-anon",
    )
    client.track(user, "Order Completed", {"revenue": 42.5})
    client.page(user, name="Pricing", properties={"path": "/pricing"})
    client.screen(user, name="Cart", properties={"items": 2})
    client.group(user, f"{prefix}-org", {"name": "Acme", "seats": 12})
    client.alias(f"{prefix}-old", user)
    for i in range(20):
        client.track(user, "Batched", {"i": i})
    client.shutdown()


async def test_analytics_python_data_lands(tracking_app, workspace, engine):
    prefix = f"py-{uuid.uuid4().hex[:8]}"
    errors: list[str] = []
    # The client is synchronous (a consumer thread): run it off the loop
    # that serves the tracking API.
    await asyncio.to_thread(
        _python_client_sends, tracking_app.state.base_url, workspace.public_key, prefix, errors
    )
    assert errors == []
    await _assert_stored(engine, workspace, prefix, "Europe/Berlin")


async def test_analytics_node_data_lands(tracking_app, workspace, engine):
    node = shutil.which("node")
    if node is None or not (SDK / "node_modules" / "@segment" / "analytics-node").is_dir():
        pytest.fail("@segment/analytics-node is not installed: run ./mp test (it runs npm ci in sdk/)")
    prefix = f"node-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SDK / "test" / "segment-node-client.mjs"),
        tracking_app.state.base_url,
        workspace.public_key,
        prefix,
        cwd=SDK,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out + err).decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["requests"] and all(r["url"].endswith("/v1/batch") for r in report["requests"])
    await _assert_stored(engine, workspace, prefix, "Asia/Tokyo")
