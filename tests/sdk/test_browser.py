"""The browser SDK end to end, in headless Chromium: a storefront on another
origin loads the SDK, identifies, tracks and pages; the calls land in
PostgreSQL with their context; an outage of the tracking API queues them
(across a reload) until it is back, and each arrives once; closing the page
sends the rest with a beacon."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from sqlalchemy import text

from tests.sdk.conftest import Storefront
from tests.support.db import events_of, profiles_of
from tests.support.servers import free_port, serve

ZONE = "America/Los_Angeles"


def shop_page(storefront: Storefront, script: str, init: dict) -> str:
    """Register a storefront page that loads the SDK from `script` and calls
    init with `init`; returns its URL."""
    path = f"/shop/{uuid.uuid4().hex[:8]}"
    storefront.pages[path] = (
        "<!doctype html><html><head><title>Shop</title>"
        f'<script src="{script}"></script>'
        f"<script>marketing.init({json.dumps(init)})</script>"
        "</head><body>shop</body></html>"
    )
    return storefront.url + path


async def wait_for_events(engine, workspace_id, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = await events_of(engine, workspace_id)
        if len(events) >= n or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.1)


async def test_identify_track_page_from_another_origin(browser, storefront, tracking_app, workspace, engine):
    tracking = tracking_app.state.base_url
    # No apiUrl: the SDK sends to the host it was loaded from.
    url = shop_page(storefront, f"{tracking}/sdk.js", {"apiKey": workspace.public_key, "flushInterval": 50})
    context = await browser.new_context(timezone_id=ZONE, locale="de-DE")
    try:
        page = await context.new_page()
        await page.goto(url)
        delivered = await page.evaluate(
            """async () => [
                await marketing.page('Home', { section: 'landing' }),
                await marketing.track('Viewed Product', { sku: 'A1', price: 9.5 }),
            ]"""
        )
        assert delivered == [True, True]
        anonymous_id = await page.evaluate("marketing.anonymousId()")
        assert await page.evaluate("localStorage.getItem('mp_anonymous_id')") == anonymous_id
        identified = await page.evaluate(
            "marketing.identify({ email: 'ada@example.com', userId: 'u-ada', traits: { plan: 'pro' } })"
        )
        assert identified is True
        assert await page.evaluate("marketing.track('Checkout Started')") is True
    finally:
        await context.close()

    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert (profile["external_id"], profile["email"]) == ("u-ada", "ada@example.com")
    assert profile["traits"] == {"plan": "pro", "timezone": ZONE}
    events = await events_of(engine, workspace.workspace_id)
    # The anonymous history joined the known profile.
    assert [e["name"] for e in events] == ["Page Viewed", "Viewed Product", "Checkout Started"]
    assert {e["profile_id"] for e in events} == {profile["id"]}
    page_viewed, viewed, _ = events
    assert page_viewed["properties"]["name"] == "Home"
    assert page_viewed["properties"]["section"] == "landing"
    assert page_viewed["properties"]["path"].startswith("/shop/")
    assert viewed["properties"] == {"sku": "A1", "price": 9.5}
    ctx = viewed["context"]
    assert ctx["library"] == {"name": "@marketing-platform/sdk", "version": "0.1.0"}
    assert ctx["timezone"] == ZONE and ctx["locale"] == "de-DE"
    assert "Chrome" in ctx["userAgent"]
    assert ctx["page"]["url"] == url and ctx["page"]["title"] == "Shop"
    assert len({e["message_id"] for e in events}) == 3
    async with engine.connect() as conn:
        owner = await conn.scalar(
            text("SELECT profile_id FROM profile_aliases WHERE workspace_id = :w AND anonymous_id = :a"),
            {"w": workspace.workspace_id, "a": anonymous_id},
        )
    assert owner == profile["id"]


async def test_calls_made_while_the_api_is_down_arrive_once_after_it_is_back(
    browser, storefront, settings, workspace, engine
):
    from tracking.app import create_app

    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    init = {
        "apiKey": workspace.public_key,
        "apiUrl": tracking,
        "flushInterval": 50,
        "retryBase": 200,
        "retryMax": 800,
    }
    # The shop serves the SDK itself, so its pages load while the API is down.
    url = shop_page(storefront, "/assets/sdk.js", init)
    context = await browser.new_context(timezone_id=ZONE)
    try:
        page = await context.new_page()
        async with serve(create_app(settings), port):
            await page.goto(url)
            assert await page.evaluate("marketing.track('Before Outage')") is True
        # The API is down: first tries fail, the calls stay queued.
        first_tries = await page.evaluate(
            "async () => [await marketing.track('During Outage 1'), await marketing.track('During Outage 2')]"
        )
        assert first_tries == [False, False]
        # A reload keeps the queue (localStorage); one more call on the new page.
        await page.reload()
        assert await page.evaluate("marketing.queued()") == 2
        assert await page.evaluate("marketing.track('During Outage 3')") is False
        assert len(await events_of(engine, workspace.workspace_id)) == 1
        async with serve(create_app(settings), port):
            events = await wait_for_events(engine, workspace.workspace_id, 4)
            for _ in range(100):
                if not await page.evaluate("marketing.queued()"):
                    break
                await asyncio.sleep(0.1)
            assert await page.evaluate("marketing.queued()") == 0
            # Retries go on with the same messageIds: nothing is stored twice.
            await asyncio.sleep(1)
            events = await events_of(engine, workspace.workspace_id)
    finally:
        await context.close()
    names = sorted(e["name"] for e in events)
    assert names == ["Before Outage", "During Outage 1", "During Outage 2", "During Outage 3"]
    assert len({e["message_id"] for e in events}) == 4


async def test_closing_the_page_sends_the_queue_with_a_beacon(
    browser, storefront, tracking_app, workspace, engine
):
    tracking = tracking_app.state.base_url
    # A long interval: only the page's exit sends these calls.
    init = {"apiKey": workspace.public_key, "apiUrl": tracking, "flushInterval": 600000}
    url = shop_page(storefront, f"{tracking}/sdk.js", init)
    context = await browser.new_context()
    try:
        # Count beacons where the next page of this origin can read them.
        await context.add_init_script(
            """(() => {
                const send = navigator.sendBeacon.bind(navigator)
                navigator.sendBeacon = (u, d) => {
                    localStorage.setItem('beacons', String(Number(localStorage.getItem('beacons') || 0) + 1))
                    return send(u, d)
                }
            })()"""
        )
        page = await context.new_page()
        await page.goto(url)
        # Not awaited: these promises answer once the calls are delivered.
        await page.evaluate(
            "() => { marketing.track('Added to Cart', { sku: 'B2' }); marketing.page('Cart') }"
        )
        assert await page.evaluate("marketing.queued()") == 2
        assert await events_of(engine, workspace.workspace_id) == []
        await page.close(run_before_unload=True)
        events = await wait_for_events(engine, workspace.workspace_id, 2)
        assert sorted(e["name"] for e in events) == ["Added to Cart", "Page Viewed"]
        after = await context.new_page()
        await after.goto(storefront.url + "/shop/none")
        assert await after.evaluate("localStorage.getItem('beacons')") == "1"
        assert (
            json.loads(await after.evaluate(f"localStorage.getItem('mp_queue_{workspace.public_key}')")) == []
        )
    finally:
        await context.close()
