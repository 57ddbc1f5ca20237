"""Fixtures for the dashboard: the web app on a real server, a signed-in
HTTP client, headless Chromium (Debian's /usr/bin/chromium through
Playwright), and demo data put in through the real APIs."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.delivery.conftest import sendgrid  # noqa: F401 - a fixture, re-exported
from tests.support.servers import serve

CHROMIUM = os.environ.get("MP_CHROMIUM", "/usr/bin/chromium")
# The walk-through's screenshots: into a temp folder, so a test run leaves
# the checkout clean; `MP_SCREENSHOTS=docs/screenshots ./mp test
# tests/web/test_browser.py` refreshes the ones the README shows.
SCREENSHOTS = Path(os.environ.get("MP_SCREENSHOTS") or Path(tempfile.gettempdir()) / "mp-screenshots")
SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
async def web_app(settings, temporal_address):
    from tests.support.services import TEMPORAL_UI_URLS
    from web.app import create_app

    # Links into the Temporal UI point at the test server's own UI; a small
    # pool, since the app lives for the rest of the run on a shared server.
    app = create_app(
        settings.model_copy(
            update={"temporal_ui_url": TEMPORAL_UI_URLS[temporal_address], "api_db_pool_size": 3}
        )
    )
    async with serve(app) as url:
        app.state.base_url = url
        yield app


async def sign_in(client: httpx.AsyncClient, secret_key: str) -> httpx.Response:
    """Sign in through the form (its CSRF cookie and field), as a browser does."""
    form = await client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return await client.post("/login", data={"key": secret_key, "csrf": token, "next": "/"})


def csrf_of(html: str) -> str:
    """The session's CSRF token as a page carries it in its forms."""
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
async def web(web_app, workspace) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client signed in to the dashboard as the test's workspace."""
    async with httpx.AsyncClient(base_url=web_app.state.base_url, timeout=30) as client:
        r = await sign_in(client, workspace.secret_key)
        assert r.status_code == 303, r.text
        yield client


@pytest.fixture(scope="session")
async def browser():
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per run, before any test
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser, web_app):
    context = await browser.new_context(
        viewport={"width": 1400, "height": 900}, base_url=web_app.state.base_url
    )
    tab = await context.new_page()
    yield tab
    await context.close()


async def shot(tab, name: str) -> None:
    """A full-page screenshot into SCREENSHOTS (docs/screenshots when refreshing the README's)."""
    await tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
