"""Fixtures of the browser SDK tests: Debian's Chromium driven by Playwright,
and a storefront on another origin than the tracking API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.servers import ROOT, serve

SDK = ROOT / "sdk"
SDK_BUILD = SDK / "dist" / "marketing.min.js"

# Debian's chromium as root, headless, on a machine without internet: no
# sandbox (root), no background connections to Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Chromium to drive (`./mp test` installs Debian's when it can)."""
    path = os.environ.get("MP_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"the browser SDK tests need Chromium at {path}: run ./mp test (it installs Debian's "
            "chromium) or set MP_CHROMIUM"
        )
    return path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


class Storefront:
    """A shop on its own origin: pages registered by path, and a self-hosted
    copy of the SDK's browser build at /assets/sdk.js (as a shop that
    bundles the npm package would serve it)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.url = ""
        self.assets: dict[str, bytes] = {"/assets/sdk.js": SDK_BUILD.read_bytes()}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path in self.assets:
            body, kind = self.assets[path], b"application/javascript"
        elif path in self.pages:
            body, kind = self.pages[path].encode(), b"text/html; charset=utf-8"
        else:
            body, kind, status = b"not found", b"text/plain", 404
            await send(
                {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="session")
async def storefront() -> AsyncIterator[Storefront]:
    shop = Storefront()
    async with serve(shop) as url:
        # `localhost` while the tracking API is on 127.0.0.1: another origin
        # (and another site), so every call is a cross-origin request.
        shop.url = url.replace("127.0.0.1", "localhost")
        yield shop
