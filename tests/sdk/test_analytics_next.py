"""Segment's own analytics.js (@segment/analytics-next from npm, bundled
locally so nothing loads from Segment's CDN), pointed at the tracking host
in headless Chromium: its page/track/identify/group/alias calls go to the
short paths (`/v1/p`, `/v1/t`, ...) with Basic auth and a preflight, and
land in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import pytest

from tests.sdk.conftest import SDK, Storefront
from tests.support.db import events_of, profiles_of


async def _bundle() -> bytes:
    node = shutil.which("node")
    if node is None or not (SDK / "node_modules" / "@segment" / "analytics-next").is_dir():
        pytest.fail("@segment/analytics-next is not installed: run ./mp test (it runs npm ci in sdk/)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SDK / "test" / "analytics-next-bundle.mjs"),
        cwd=SDK,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out


async def test_analytics_next_sends_to_the_tracking_host(
    browser, storefront: Storefront, tracking_app, workspace, engine
):
    storefront.assets["/assets/analytics-next.js"] = await _bundle()
    host = tracking_app.state.base_url.removeprefix("http://") + "/v1"
    segment_io = {"apiKey": workspace.public_key, "apiHost": host, "protocol": "http"}
    settings = {"writeKey": workspace.public_key, "cdnSettings": {"integrations": {"Segment.io": segment_io}}}
    options = {"integrations": {"Segment.io": {"apiHost": host, "protocol": "http"}}}
    path = f"/ajs/{uuid.uuid4().hex[:8]}"
    storefront.pages[path] = (
        "<!doctype html><html><head><title>AJS shop</title>"
        '<script src="/assets/analytics-next.js"></script>'
        f"<script>window.ajs = AnalyticsBrowser.load({json.dumps(settings)}, {json.dumps(options)})</script>"
        "</head><body>shop</body></html>"
    )
    context = await browser.new_context(timezone_id="Europe/Madrid")
    answers: list[tuple[str, int]] = []
    try:
        page = await context.new_page()
        page.on("response", lambda r: answers.append((r.url, r.status)) if "/v1/" in r.url else None)
        await page.goto(storefront.url + path)
        await page.evaluate(
            """async () => {
                await ajs.page('Home')
                await ajs.track('Clicked Banner', { banner: 'winter' })
                await ajs.identify('u-next', { email: 'next@example.com', plan: 'team' })
                await ajs.group('org-1', { name: 'Org One' })
                await ajs.alias('u-next', 'legacy-42')
            }"""
        )
    finally:
        await context.close()

    posted = [(url.rsplit("/", 2)[-2:], status) for url, status in answers]
    assert posted, "analytics.js sent nothing to the tracking host"
    assert all(status == 200 for _, status in posted), posted
    assert {"/".join(p) for p, _ in posted} >= {"v1/p", "v1/t", "v1/i", "v1/g", "v1/a"}
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert (profile["external_id"], profile["email"]) == ("u-next", "next@example.com")
    assert profile["traits"]["plan"] == "team"
    assert profile["traits"]["group_org-1"] == {"name": "Org One", "id": "org-1"}
    events = await events_of(engine, workspace.workspace_id)
    assert sorted(e["name"] for e in events) == ["Clicked Banner", "Page Viewed"]
    # The anonymous page and track joined the identified profile.
    assert {e["profile_id"] for e in events} == {profile["id"]}
    clicked = next(e for e in events if e["name"] == "Clicked Banner")
    assert clicked["properties"] == {"banner": "winter"}
    assert clicked["context"]["library"]["name"] == "analytics.js"
