"""The dashboard over HTTP: sign-in, every page answers, workspaces are
isolated, forms put messages next to fields, bad parameters are 4xx pages."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import new_workspace
from tests.web.conftest import csrf_of, sign_in
from web.pages.segments import STARTERS

PAGES = [
    "/",
    "/profiles",
    "/segments",
    "/segments/new",
    "/campaigns",
    "/campaigns/new",
    "/flows",
    "/templates",
    "/templates/new",
    "/providers",
    "/events",
]


async def test_pages_need_a_session(web_app):
    async with httpx.AsyncClient(base_url=web_app.state.base_url) as client:
        for path in PAGES:
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path


@pytest.mark.parametrize(
    ("key", "message"),
    [("sk_wrong", "This key is not valid"), ("", "Paste your workspace"), ("x" * 500, "too long")],
)
async def test_wrong_key_is_a_clear_message(web_app, key, message):
    async with httpx.AsyncClient(base_url=web_app.state.base_url) as client:
        r = await sign_in(client, key)
        assert r.status_code in (401, 422)
        assert message in r.text and 'data-field="key"' in r.text
        assert "mp_session" not in r.cookies


async def test_public_key_is_refused(web_app, workspace):
    async with httpx.AsyncClient(base_url=web_app.state.base_url) as client:
        r = await sign_in(client, workspace.public_key)
        assert r.status_code == 403 and "public key" in r.text


async def test_login_needs_its_csrf_cookie(web_app, workspace):
    async with httpx.AsyncClient(base_url=web_app.state.base_url) as client:
        r = await client.post("/login", data={"key": workspace.secret_key, "csrf": "forged"})
        assert r.status_code == 403 and "mp_session" not in r.cookies


async def test_session_cookie_is_httponly_samesite(web_app, workspace):
    async with httpx.AsyncClient(base_url=web_app.state.base_url) as client:
        r = await sign_in(client, workspace.secret_key)
        cookie = r.headers["set-cookie"].lower()
        assert "mp_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


async def test_every_page_renders(web):
    for path in PAGES:
        r = await web.get(path)
        assert r.status_code == 200, (path, r.text[-2000:])
        assert "Sign out" in r.text


async def test_forged_session_is_refused(web_app, web):
    cookie = web.cookies["mp_session"]
    async with httpx.AsyncClient(
        base_url=web_app.state.base_url, cookies={"mp_session": cookie[:-3] + "abc"}
    ) as other:
        assert (await other.get("/")).status_code == 303


async def test_forms_without_csrf_are_refused(web):
    r = await web.post("/segments/new", data={"name": "x", "definition": "{}"})
    assert r.status_code == 403
    assert (await web.get("/segments")).text.count("/segments/0") == 0


async def test_sign_out(web):
    page = await web.get("/")
    r = await web.post("/logout", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    web.cookies.clear()
    assert (await web.get("/")).status_code == 303


@pytest.mark.parametrize(
    "path",
    [
        "/?range=1y",
        "/profiles?limit=0",
        "/profiles?limit=abc",
        "/profiles?cursor=!!!",
        "/profiles?q=trait.%24%24..x%3D1",
        "/profiles/not-a-uuid",
        "/profiles/00000000-0000-7000-8000-000000000000",
        "/segments?cursor=zzz",
        "/segments/00000000-0000-7000-8000-000000000000",
        "/segments/nope/edit",
        "/campaigns?cursor=zzz",
        "/campaigns?cursor=%FF",
        "/campaigns/not-a-uuid",
        "/campaigns/00000000-0000-7000-8000-000000000000",
        "/campaigns/00000000-0000-7000-8000-000000000000?cursor=abc",
        "/campaigns/00000000-0000-7000-8000-000000000000/stats",
        "/flows/00000000-0000-7000-8000-000000000000",
        "/flows?cursor=%FF",
        "/events?range=5y",
        "/events?name=" + "x" * 300,
        "/events?steps=A&window_hours=-4",
        "/events?steps=A%0AB&window_hours=99999999999999999999",
        "/events?steps=OnlyOne",
        "/templates/00000000-0000-7000-8000-000000000000",
        "/no-such-page",
        "/events?name=%00",
        "/profiles?q=%ED%A0%80",
    ],
)
async def test_bad_parameters_are_never_500(web, path):
    r = await web.get(path)
    assert 200 <= r.status_code < 500, (path, r.status_code, r.text[-1500:])
    assert "Unexpected error" not in r.text


async def test_segment_form_puts_messages_next_to_fields(web):
    csrf = csrf_of((await web.get("/segments/new")).text)
    r = await web.post("/segments/new", data={"csrf": csrf, "name": "", "definition": "{not json"})
    assert r.status_code == 422
    assert 'data-field="definition"' in r.text and "not valid JSON" in r.text
    r = await web.post(
        "/segments/new",
        data={
            "csrf": csrf,
            "name": "Bad op",
            "definition": '{"type": "trait", "path": "plan", "op": "nope"}',
        },
    )
    assert r.status_code == 422 and 'data-field="definition"' in r.text
    r = await web.post(
        "/segments/new",
        data={
            "csrf": csrf,
            "name": "nul\x00",
            "definition": '{"type": "trait", "path": "a", "op": "exists"}',
        },
    )
    assert r.status_code == 422 and 'data-field="name"' in r.text


async def test_segment_create_estimate_and_duplicate_name(web, api):
    await api.post("/api/v1/profiles", json={"email": "pro@example.com", "traits": {"plan": "pro"}})
    await api.post("/api/v1/profiles", json={"email": "free@example.com", "traits": {"plan": "free"}})
    csrf = csrf_of((await web.get("/segments/new")).text)
    definition = '{"type": "trait", "path": "plan", "op": "eq", "value": "pro"}'
    estimate = await web.post(
        "/segments/estimate", data={"definition": definition}, headers={"X-CSRF-Token": csrf}
    )
    assert (
        estimate.status_code == 200 and 'class="n">1<' in estimate.text and "pro@example.com" in estimate.text
    )
    r = await web.post("/segments/new", data={"csrf": csrf, "name": "Pro", "definition": definition})
    assert r.status_code == 303
    listed = (await api.get("/api/v1/segments")).json()["data"]
    assert [s["name"] for s in listed] == ["Pro"]
    again = await web.post("/segments/new", data={"csrf": csrf, "name": "Pro", "definition": definition})
    assert again.status_code == 409 and 'data-field="name"' in again.text


async def test_template_form_rejects_bad_email_and_syntax(web):
    csrf = csrf_of((await web.get("/templates/new")).text)
    r = await web.post(
        "/templates/new",
        data={"csrf": csrf, "name": "T", "subject": "Hi", "from_email": "not-an-email", "html": "<p>x</p>"},
    )
    assert r.status_code == 422 and 'data-field="from_email"' in r.text
    r = await web.post(
        "/templates/new",
        data={"csrf": csrf, "name": "T", "subject": "Hi", "from_email": "a@example.com", "html": "{% if %}"},
    )
    assert r.status_code == 422 and 'data-field="html"' in r.text


async def test_another_workspace_sees_nothing(web_app, web, api, sessionmaker):
    await api.post("/api/v1/profiles", json={"email": "secret@example.com"})
    created = (
        await api.post(
            "/api/v1/segments",
            json={"name": "Mine", "definition": {"type": "trait", "path": "a", "op": "exists"}},
        )
    ).json()
    profile = (await api.get("/api/v1/profiles")).json()["data"][0]
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(base_url=web_app.state.base_url, timeout=30) as client:
        assert (await sign_in(client, other.secret_key)).status_code == 303
        assert "secret@example.com" not in (await client.get("/profiles")).text
        assert "Mine" not in (await client.get("/segments")).text
        assert (await client.get(f"/segments/{created['id']}")).status_code == 404
        assert (await client.get(f"/profiles/{profile['id']}")).status_code == 404
        csrf = csrf_of((await client.get("/segments/new")).text)
        r = await client.post(
            f"/segments/{created['id']}/edit",
            data={
                "csrf": csrf,
                "name": "Stolen",
                "definition": '{"type": "trait", "path": "a", "op": "exists"}',
            },
        )
        assert r.status_code == 404
    assert (await api.get(f"/api/v1/segments/{created['id']}")).json()["name"] == "Mine"


async def test_every_starter_tree_is_a_valid_definition(web):
    csrf = csrf_of((await web.get("/segments/new")).text)
    for label, tree in STARTERS.items():
        r = await web.post(
            "/segments/estimate", data={"definition": json.dumps(tree)}, headers={"X-CSRF-Token": csrf}
        )
        assert "data-estimate>" in r.text and "data-estimate-error" not in r.text, (label, r.text)
