"""Dashboard actions over HTTP: activate and pause a flow, create and edit
a template, provider health from the shared breaker, output escaping."""

from __future__ import annotations

from delivery.limits import BreakerPolicy, ProviderLimits
from tests.web.conftest import csrf_of

TEMPLATE = {"name": "Hello", "subject": "Hi", "html": "<p>Hi</p>", "from_email": "shop@example.com"}


def wait_flow(template_id: str) -> dict:
    return {
        "trigger": {"type": "api"},
        "start": "hello",
        "nodes": [
            {"id": "hello", "type": "send_email", "template_id": template_id, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }


async def test_activate_and_pause_a_flow(web, api):
    template = (await api.post("/api/v1/templates", json=TEMPLATE)).json()
    flow = (
        await api.post("/api/v1/flows", json={"name": "Hello", "definition": wait_flow(template["id"])})
    ).json()
    page = await web.get(f"/flows/{flow['id']}")
    assert page.status_code == 200 and 'data-node="hello"' in page.text and "Activate" in page.text
    csrf = csrf_of(page.text)
    r = await web.post(f"/flows/{flow['id']}/activate", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await api.get(f"/api/v1/flows/{flow['id']}")).json()["status"] == "active"
    r = await web.post(f"/flows/{flow['id']}/pause", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await api.get(f"/api/v1/flows/{flow['id']}")).json()["status"] == "paused"
    # Pausing a paused flow is refused with a notice on the page, not an error page.
    r = await web.post(f"/flows/{flow['id']}/pause", data={"csrf": csrf}, follow_redirects=True)
    assert r.status_code == 200 and "alert error" in r.text
    assert (await web.post(f"/flows/{flow['id']}/delete", data={"csrf": csrf})).status_code in (400, 404, 405)
    assert (await web.post(f"/flows/{flow['id']}/activate", data={})).status_code == 403


async def test_create_and_edit_a_template(web, api):
    csrf = csrf_of((await web.get("/templates/new")).text)
    r = await web.post(
        "/templates/new", data={"csrf": csrf, **TEMPLATE, "subject": "Hi {{ profile.first_name }}"}
    )
    assert r.status_code == 303
    template_id = r.headers["location"].rsplit("/", 1)[1]
    r = await web.post(f"/templates/{template_id}", data={"csrf": csrf, **TEMPLATE, "name": "Renamed"})
    assert r.status_code == 303
    assert (await api.get(f"/api/v1/templates/{template_id}")).json()["name"] == "Renamed"
    preview = await web.post(
        "/templates-preview",
        data={**TEMPLATE, "subject": "Hi {{ profile.email }}", "preview_for": "nobody@example.com"},
        headers={"X-CSRF-Token": csrf},
    )
    assert "no profile with email" in preview.text


async def test_provider_health_shows_an_open_breaker(web, api, redis_client, settings):
    provider = (
        await api.post(
            "/api/v1/providers",
            json={"name": "relay", "kind": "smtp", "priority": 5, "settings": {"host": "127.0.0.1"}},
        )
    ).json()
    page = await web.get("/providers")
    assert "relay" in page.text and ">closed<" in page.text
    limits = ProviderLimits(redis_client, settings.redis_prefix, BreakerPolicy(failure_threshold=2))
    for _ in range(2):
        await limits.failed(provider["id"], was_probe=False)
    page = await web.get("/providers")
    assert ">open<" in page.text and "retry in" in page.text


async def test_stored_text_is_escaped(web, api):
    hostile = "<script>alert(1)</script>"
    created = (
        await api.post("/api/v1/profiles", json={"email": "x@example.com", "traits": {"name": hostile}})
    ).json()
    page = await web.get(f"/profiles/{created['id']}")
    assert hostile not in page.text and "&lt;script&gt;" in page.text
