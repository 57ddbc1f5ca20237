"""Templates, providers and suppressions through the management API."""

from __future__ import annotations

import httpx

from tests.conftest import new_workspace
from tests.delivery.conftest import SENDER, make_template


async def test_template_crud_preview_and_derived_text(api, tracking):
    await tracking.post(
        "/identify", json={"userId": "t1", "email": "t1@example.com", "traits": {"first_name": "Ada"}}
    )
    profile = (await api.get("/api/v1/profiles", params={"external_id": "t1"})).json()["data"][0]
    template = await make_template(api)
    assert template["text"] is None

    r = await api.post(
        f"/api/v1/templates/{template['id']}/preview",
        json={"profile_id": profile["id"], "data": {"code": "X1"}},
    )
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["subject"] == "Hi Ada"
    assert "Hello Ada, code X1" in preview["html"]
    assert (
        "Hello Ada, code X1" in preview["text"]
        and "Deal (https://shop.example.com/deal?id=7&x=1)" in preview["text"]
    )
    assert preview["missing_variables"] == []

    # A missing variable renders empty and is reported, never an error.
    r = await api.post(f"/api/v1/templates/{template['id']}/preview", json={"email": "who@example.com"})
    assert r.json()["subject"] == "Hi" and set(r.json()["missing_variables"]) == {"first_name", "code"}

    assert (
        await api.post(
            "/api/v1/templates", json={"name": "Welcome", "subject": "s", "html": "h", "from_email": SENDER}
        )
    ).status_code == 409
    bad = await api.post(
        "/api/v1/templates", json={"name": "Broken", "subject": "{{ oops", "html": "h", "from_email": SENDER}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == "body.subject"
    assert (
        await api.post(
            "/api/v1/templates", json={"name": "x", "subject": "s", "html": "h", "from_email": "nope"}
        )
    ).status_code == 422

    patched = await api.patch(f"/api/v1/templates/{template['id']}", json={"text": "Plain {{ data.code }}"})
    assert patched.json()["text"] == "Plain {{ data.code }}"
    assert (await api.get("/api/v1/templates")).json()["data"][0]["id"] == template["id"]
    assert (await api.delete(f"/api/v1/templates/{template['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/templates/{template['id']}")).status_code == 404


async def test_sandbox_refuses_python_internals(api):
    # Named outright, they are refused at save (tests/delivery/test_template_budget.py);
    # reached through data at render time, the sandbox still refuses them.
    template = await make_template(api, name="Evil", html="<p>{{ data[data.name] }}</p>")
    r = await api.post(
        f"/api/v1/templates/{template['id']}/preview",
        json={"email": "a@example.com", "data": {"name": "__class__"}},
    )
    assert r.status_code == 200
    assert "class" not in r.json()["html"] and "dict" not in r.json()["html"]


async def test_provider_credentials_are_write_only(api):
    r = await api.post(
        "/api/v1/providers",
        json={
            "name": "primary",
            "kind": "sendgrid",
            "priority": 1,
            "rate_limit": 50,
            "settings": {"base_url": "https://api.sendgrid.com"},
            "credentials": {"api_key": "SG.super-secret"},
        },
    )
    assert r.status_code == 201, r.text
    provider = r.json()
    assert provider["credentials_set"] == ["api_key"] and "SG.super-secret" not in r.text
    assert provider["webhook_url"].endswith(f"/webhooks/sendgrid/{provider['id']}")
    for response in (
        await api.get(f"/api/v1/providers/{provider['id']}"),
        await api.get("/api/v1/providers"),
    ):
        assert "SG.super-secret" not in response.text
    patched = await api.patch(
        f"/api/v1/providers/{provider['id']}", json={"priority": 5, "credentials": {"api_key": "SG.rotated"}}
    )
    assert patched.json()["priority"] == 5 and "SG.rotated" not in patched.text

    errors = [
        {"name": "x", "kind": "sendgrid", "credentials": {}},  # api_key required
        {"name": "x", "kind": "sendgrid", "settings": {"colour": "red"}, "credentials": {"api_key": "k"}},
        {"name": "x", "kind": "pigeon"},
        {"name": "x", "kind": "smtp"},  # host required
        {"name": "x", "kind": "ses", "rate_limit": 0},
    ]
    for body in errors:
        assert (await api.post("/api/v1/providers", json=body)).status_code == 422, body
    assert (
        await api.post(
            "/api/v1/providers", json={"name": "primary", "kind": "mixmax", "credentials": {"api_token": "t"}}
        )
    ).status_code == 409
    assert (await api.delete(f"/api/v1/providers/{provider['id']}")).status_code == 204


async def test_suppressions_and_isolation(api, api_app, sessionmaker):
    r = await api.post("/api/v1/suppressions", json={"email": "Gone@Example.com", "reason": "manual"})
    assert r.status_code == 201 and r.json()["reason"] == "manual"
    await api.post("/api/v1/suppressions", json={"email": "a@example.com"})
    first = (await api.get("/api/v1/suppressions", params={"limit": 1})).json()
    second = (
        await api.get("/api/v1/suppressions", params={"limit": 1, "cursor": first["next_cursor"]})
    ).json()
    assert [s["email"].lower() for s in first["data"] + second["data"]] == [
        "a@example.com",
        "gone@example.com",
    ]
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(
        base_url=api_app.state.base_url, headers={"Authorization": f"Bearer {other.secret_key}"}
    ) as client:
        assert (await client.get("/api/v1/suppressions")).json()["data"] == []
    assert (await api.delete("/api/v1/suppressions/gone@example.com")).status_code == 204
    assert (await api.delete("/api/v1/suppressions/gone@example.com")).status_code == 404
