"""Management API: every input the platform could not store or read back
gets a 4xx with `{"error", "detail"}`, never a 500 or a dropped connection."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from definitions.limits import API_BODY_BYTES, MAX_JSON_DEPTH

SENDER = "hello@example.com"


def _nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _assert_4xx(r: httpx.Response, *statuses: int) -> dict:
    assert r.status_code in (statuses or (400, 404, 409, 413, 422)), (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    return body


async def _post_raw(api: httpx.AsyncClient, path: str, raw: bytes) -> httpx.Response:
    return await api.post(path, content=raw, headers={"Content-Type": "application/json"})


async def test_traits_at_the_depth_limit_are_stored_and_readable(api):
    r = await api.post(
        "/api/v1/profiles", json={"external_id": "d1", "traits": {"t": _nested(MAX_JSON_DEPTH - 1)}}
    )
    assert r.status_code == 201, r.text
    assert (await api.get(f"/api/v1/profiles/{r.json()['id']}")).status_code == 200


async def test_traits_past_the_depth_limit_are_422_naming_the_field(api):
    r = await api.post("/api/v1/profiles", json={"external_id": "d2", "traits": _nested(MAX_JSON_DEPTH + 1)})
    body = _assert_4xx(r, 422)
    assert body["detail"][0]["loc"].startswith("body.traits"), body
    assert "32 levels" in body["detail"][0]["msg"]
    created = await api.post("/api/v1/profiles", json={"external_id": "d3"})
    r = await api.patch(f"/api/v1/profiles/{created.json()['id']}", json={"traits": _nested(40)})
    assert _assert_4xx(r, 422)["detail"][0]["loc"].startswith("body.traits")
    assert (await api.get(f"/api/v1/profiles/{created.json()['id']}")).json()["traits"] == {}


@pytest.mark.parametrize("levels", [100, 254, 1000, 100_000])
async def test_very_deep_bodies_are_4xx(api, levels):
    raw = b'{"external_id": "deep", "traits": ' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"
    _assert_4xx(await _post_raw(api, "/api/v1/profiles", raw), 400, 422)
    raw = b"[" * levels + b"]" * levels
    _assert_4xx(await _post_raw(api, "/api/v1/segments/estimate", raw), 400, 422)
    assert (await api.get("/api/v1/profiles", params={"external_id": "deep"})).json()["data"] == []


async def test_bodies_over_the_limit_are_413(api):
    big = {"external_id": "big", "traits": {"blob": "x" * (API_BODY_BYTES + 10)}}
    body = _assert_4xx(await api.post("/api/v1/profiles", json=big), 413)
    assert body["error"] == "payload_too_large"

    # Without a Content-Length (chunked), the streamed bytes are counted.
    async def chunks():
        yield b'{"external_id": "big2", "traits": {"blob": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    r = await api.post("/api/v1/profiles", content=chunks(), headers={"Content-Type": "application/json"})
    _assert_4xx(r, 413)
    assert (await api.get("/api/v1/profiles", params={"external_id": "big2"})).json()["data"] == []


@pytest.mark.parametrize(
    "path, raw",
    [
        ("/api/v1/profiles", b'{"external_id": "a\\u0000b"}'),
        ("/api/v1/profiles", b'{"external_id": "n1", "traits": {"k": "a\\u0000"}}'),
        ("/api/v1/profiles", b'{"external_id": "n2", "traits": {"k\\u0000": 1}}'),
        ("/api/v1/profiles", b'{"external_id": "\\ud800"}'),
        ("/api/v1/profiles", b'{"external_id": "n3", "traits": {"\\udc00": 1}}'),
        ("/api/v1/profiles", b'{"external_id": "n4", "traits": {"n": 1180591620717411303424}}'),
        ("/api/v1/profiles", b'{"external_id": "n5", "traits": {"n": 1e400}}'),
        ("/api/v1/profiles", b'{"email": "a\\u0000@example.com"}'),
        ("/api/v1/segments", b'{"name": "s\\u0000", "definition": {"type": "all", "conditions": []}}'),
        (
            "/api/v1/segments",
            b'{"name": "s1", "definition": '
            b'{"type": "trait", "path": "plan", "op": "eq", "value": "p\\u0000"}}',
        ),
        (
            "/api/v1/segments",
            b'{"name": "s2", "definition": {"type": "trait", "path": "plan", "op": "gt", '
            b'"value": 1180591620717411303424}}',
        ),
        ("/api/v1/segments", b'{"name": "s3", "definition": {"type": "event", "name": "E\\ud800"}}'),
        (
            "/api/v1/segments",
            b'{"name": "s4", "definition": {"type": "event", "name": "E", '
            b'"count": {"op": ">=", "value": 1180591620717411303424}}}',
        ),
        (
            "/api/v1/segments",
            b'{"name": "s5", "definition": '
            b'{"type": "event", "name": "E", "within": {"last": 99999999999999}}}',
        ),
        (
            "/api/v1/segments/estimate",
            b'{"definition": '
            b'{"type": "event", "name": "E", "within": {"from": "2024-01-01T00:00:00+20:00"}}}',
        ),
        (
            "/api/v1/segments/estimate",
            b'{"definition": {"type": "event", "name": "E", "within": {"to": "0001-01-01T00:00:00+01:00"}}}',
        ),
        (
            "/api/v1/templates",
            b'{"name": "t\\u0000", "subject": "s", "html": "h", "from_email": "' + SENDER.encode() + b'"}',
        ),
        (
            "/api/v1/templates",
            b'{"name": "t1", "subject": "s", "html": "h\\ud800", "from_email": "' + SENDER.encode() + b'"}',
        ),
        ("/api/v1/providers", b'{"name": "p\\u0000", "kind": "smtp", "settings": {"host": "127.0.0.1"}}'),
        (
            "/api/v1/providers",
            b'{"name": "p1", "kind": "smtp", "settings": {"port": 1180591620717411303424}}',
        ),
        ("/api/v1/providers", b'{"name": "p2", "kind": "sendgrid", "credentials": {"api_key": "\\u0000"}}'),
        ("/api/v1/suppressions", b'{"email": "x@exa\\u0000mple.com"}'),
        ("/api/v1/suppressions", b'{"email": "x@example.com", "reason": "r\\ud800"}'),
    ],
)
async def test_nul_surrogates_and_huge_numbers_in_bodies_are_4xx(api, path, raw):
    _assert_4xx(await _post_raw(api, path, raw), 400, 422)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/profiles?trait.plan=a%00b",
        "/api/v1/profiles?email=a%00@example.com",
        "/api/v1/profiles?external_id=%00",
        "/api/v1/profiles?cursor=%00",
        "/api/v1/profiles?limit=1000000000000000000000000000000",
        "/api/v1/profiles?limit=-1000000000000000000000000000000",
        "/api/v1/profiles?external_id=%ED%A0%80",
        "/api/v1/profiles?trait.%00=1",
        "/api/v1/profiles/%00",
        "/api/v1/profiles/123456789012345678901234567890",
        "/api/v1/segments/%00/members",
        "/api/v1/suppressions?cursor=%00",
        "/api/v1/messages/1180591620717411303424",
    ],
)
async def test_nul_and_huge_numbers_in_urls_are_4xx(api, url):
    _assert_4xx(await api.get(url))


async def test_nul_in_a_path_segment_of_a_delete_is_4xx(api):
    _assert_4xx(await api.delete("/api/v1/suppressions/a%00b@example.com"))
    _assert_4xx(await api.delete("/api/v1/suppressions/%ED%A0%80@example.com"))


async def _provider(api: httpx.AsyncClient) -> dict:
    r = await api.post(
        "/api/v1/providers", json={"name": "ses-null", "kind": "ses", "settings": {"region": "us-east-1"}}
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("field", ["name", "priority", "enabled", "settings", "credentials"])
async def test_null_for_a_non_nullable_provider_field_is_422(api, field):
    provider = await _provider(api)
    r = await api.patch(f"/api/v1/providers/{provider['id']}", json={field: None})
    assert _assert_4xx(r, 422)["detail"][0]["loc"] == f"body.{field}"
    assert (await api.get(f"/api/v1/providers/{provider['id']}")).json()["name"] == "ses-null"


async def test_rate_limit_null_on_a_provider_means_unlimited(api):
    provider = await _provider(api)
    r = await api.patch(f"/api/v1/providers/{provider['id']}", json={"rate_limit": None})
    assert r.status_code == 200 and r.json()["rate_limit"] is None


@pytest.mark.parametrize("field", ["name", "subject", "html", "from_email"])
async def test_null_for_a_non_nullable_template_field_is_422(api, field):
    r = await api.post(
        "/api/v1/templates", json={"name": f"null-{field}", "subject": "s", "html": "h", "from_email": SENDER}
    )
    assert r.status_code == 201, r.text
    r = await api.patch(f"/api/v1/templates/{r.json()['id']}", json={field: None})
    assert _assert_4xx(r, 422)["detail"][0]["loc"] == f"body.{field}"


@pytest.mark.parametrize("field", ["name", "definition"])
async def test_null_for_a_non_nullable_segment_field_is_422(api, field):
    r = await api.post(
        "/api/v1/segments", json={"name": f"null-{field}", "definition": {"type": "all", "conditions": []}}
    )
    assert r.status_code == 201, r.text
    r = await api.patch(f"/api/v1/segments/{r.json()['id']}", json={field: None})
    assert _assert_4xx(r, 422)["detail"][0]["loc"] == f"body.{field}"


async def test_null_traits_on_a_profile_patch_is_422(api):
    r = await api.post("/api/v1/profiles", json={"external_id": "null-traits", "traits": {"a": 1}})
    r = await api.patch(f"/api/v1/profiles/{r.json()['id']}", json={"traits": None})
    assert _assert_4xx(r, 422)["detail"][0]["loc"] == "body.traits"


@pytest.mark.parametrize("path", ["/api/v1/providers", "/api/v1/templates", "/api/v1/segments"])
async def test_concurrent_creates_with_one_name_are_409_not_500(api, path):
    body = {
        "/api/v1/providers": {"name": "same", "kind": "ses", "settings": {}},
        "/api/v1/templates": {"name": "same", "subject": "s", "html": "h", "from_email": SENDER},
        "/api/v1/segments": {"name": "same", "definition": {"type": "all", "conditions": []}},
    }[path]
    responses = await asyncio.gather(*(api.post(path, json=body) for _ in range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 11, [r.text for r in responses if r.status_code != 201]


async def test_framework_errors_have_the_error_shape(api):
    body = _assert_4xx(await api.get("/api/v1/no-such-thing"), 404)
    assert body["error"] == "not_found"
    body = _assert_4xx(await api.put("/api/v1/profiles"), 405)
    assert body["error"] == "method_not_allowed"
    body = _assert_4xx(await _post_raw(api, "/api/v1/profiles", b"\xff\xfe{"), 400)
    assert body["error"] == "bad_request"
