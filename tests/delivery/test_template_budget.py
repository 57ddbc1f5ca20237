"""Template rendering has a time and size budget, runs off the event loop,
and templates that can never render are refused when saved."""

from __future__ import annotations

import asyncio
import time

import httpx

from delivery.render import MAX_OUTPUT_CHARS, RENDER_SECONDS
from tests.delivery.conftest import SENDER, add_sendgrid, make_template, send

SLOW_LOOP = "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"


async def _create(api, name: str, html: str) -> httpx.Response:
    return await api.post(
        "/api/v1/templates", json={"name": name, "subject": "s", "html": html, "from_email": SENDER}
    )


async def test_templates_that_cannot_render_are_refused_at_save(api):
    refused = {
        "class": "<p>{{ ''.__class__.__mro__[1].__subclasses__() }}</p>",
        "item": "<p>{{ data['__class__'] }}</p>",
        "attr-filter": "<p>{{ data|attr('__init__') }}</p>",
        "mro": "<p>{{ data.mro() }}</p>",
        "huge": "<p>{{ 'x' * 20000000 }}</p>",
        "power": "<p>{{ 10 ** 100000000 }}</p>",
        "width": "<p>{{ 'x'|center(100000000) }}</p>",
        "syntax": "<p>{{ oops</p>",
    }
    for name, html in refused.items():
        r = await _create(api, name, html)
        assert r.status_code == 422, (name, r.text)
        assert r.json()["detail"][0]["loc"] == "body.html", (name, r.text)
    started = time.monotonic()
    r = await _create(api, "slow", SLOW_LOOP)
    assert r.status_code == 422 and "took over" in r.json()["detail"][0]["msg"], r.text
    assert time.monotonic() - started < RENDER_SECONDS + 2
    template = await make_template(api)
    patched = await api.patch(f"/api/v1/templates/{template['id']}", json={"subject": "{{ ''.__class__ }}"})
    assert patched.status_code == 422 and patched.json()["detail"][0]["loc"] == "body.subject"
    assert (await api.get("/api/v1/templates")).json()["data"] == [
        (await api.get(f"/api/v1/templates/{template['id']}")).json()
    ]


async def test_a_slow_preview_does_not_block_the_event_loop(api, api_app):
    # Over budget only with the data given at preview time, so it saves.
    body = {"name": "Loop", "subject": "s", "from_email": SENDER}
    html = "{% for i in range(data.n) %}{% for j in range(data.n) %}{% endfor %}{% endfor %}done"
    template = (await api.post("/api/v1/templates", json=body | {"html": html})).json()
    preview = asyncio.create_task(
        api.post(
            f"/api/v1/templates/{template['id']}/preview",
            json={"email": "a@example.com", "data": {"n": 100000}},
        )
    )
    worst = 0.0
    async with httpx.AsyncClient(base_url=api_app.state.base_url) as client:
        while not preview.done():
            started = time.monotonic()
            assert (await client.get("/health")).status_code == 200
            worst = max(worst, time.monotonic() - started)
            await asyncio.sleep(0.05)
    r = preview.result()
    assert r.status_code == 422 and "took over" in r.json()["detail"][0]["msg"], r.text
    assert worst < 1.0, f"/health waited {worst:.2f} s while a template rendered"
    small = await api.post(
        f"/api/v1/templates/{template['id']}/preview", json={"email": "a@example.com", "data": {"n": 3}}
    )
    assert small.status_code == 200 and small.json()["html"] == "done"


async def test_a_send_over_budget_fails_permanently_and_sends_nothing(api, worker, sendgrid):
    await add_sendgrid(api, sendgrid)
    template = await make_template(api, html="<p>{{ 'x' * data.n }}</p>")
    message = await send(api, template["id"], "big@example.com", data={"n": 20_000_000})
    assert message["status"] == "failed", message
    assert "could not be rendered" in message["error"] and str(MAX_OUTPUT_CHARS) in message["error"]
    erroring = await make_template(api, name="Divide", html="<p>{{ 1 / data.n }}</p>")
    message = await send(api, erroring["id"], "zero@example.com", data={"n": 0})
    assert message["status"] == "failed" and "division by zero" in message["error"], message
    assert sendgrid.received == []
    fine = await send(api, template["id"], "small@example.com", data={"n": 3})
    assert fine["status"] == "sent" and "xxx" in sendgrid.received[0]["content"][-1]["value"]
