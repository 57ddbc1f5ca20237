"""Segment's HTTP Tracking API on the tracking host: paths, Basic auth and
`writeKey`, gzip bodies, group and screen, sentAt clock-skew correction;
CORS on the tracking paths with a workspace's `allowed_origins`; /sdk.js."""

from __future__ import annotations

import base64
import gzip
import zlib
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from tests.support.db import events_of, profiles_of
from tracking.ingest import MAX_BATCH_BYTES


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
async def raw(tracking_app):
    """A client of the tracking API without any key."""
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url, timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "name", "kind"),
    [
        ("/v1/track", {"event": "Order Completed", "properties": {"total": 3}}, "Order Completed", "track"),
        ("/v1/page", {"name": "Home", "properties": {"path": "/"}}, "Page Viewed", "page"),
        ("/v1/screen", {"name": "Cart", "properties": {"items": 2}}, "Screen Viewed", "screen"),
        ("/v1/t", {"event": "Short Track"}, "Short Track", "track"),
        ("/t", {"event": "Short Track"}, "Short Track", "track"),
        ("/p", {"name": "Short Page"}, "Page Viewed", "page"),
        ("/s", {"name": "Short Screen"}, "Screen Viewed", "screen"),
    ],
)
async def test_single_event_paths_store_the_event(raw, workspace, engine, path, body, name, kind):
    r = await raw.post(path, json={"userId": "u1", **body}, headers=_basic(workspace.public_key))
    assert r.status_code == 200, r.text
    [event] = await events_of(engine, workspace.workspace_id)
    assert (event["name"], event["type"], event["external_id"]) == (name, kind, "u1")
    if kind == "screen":
        assert event["properties"]["name"] == body["name"]


async def test_identify_group_and_alias_on_v1_and_short_paths(raw, workspace, engine):
    auth = _basic(workspace.public_key)
    assert (
        await raw.post(
            "/v1/identify",
            json={"anonymousId": "a1", "userId": "u1", "traits": {"plan": "pro"}},
            headers=auth,
        )
    ).status_code == 200
    assert (
        await raw.post(
            "/v1/group", json={"userId": "u1", "groupId": "acme", "traits": {"seats": 10}}, headers=auth
        )
    ).status_code == 200
    assert (
        await raw.post("/g", json={"userId": "u1", "groupId": "globex", "traits": {"seats": 3}}, headers=auth)
    ).status_code == 200
    assert (
        await raw.post("/i", json={"userId": "u1", "traits": {"email": "ada@example.com"}}, headers=auth)
    ).status_code == 200
    assert (
        await raw.post("/a", json={"previousId": "old-id", "userId": "u1"}, headers=auth)
    ).status_code == 200
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["external_id"] == "u1" and profile["email"] == "ada@example.com"
    assert profile["traits"]["plan"] == "pro"
    # Both groups are kept, each under its id.
    assert profile["traits"]["group_acme"] == {"seats": 10, "id": "acme"}
    assert profile["traits"]["group_globex"] == {"seats": 3, "id": "globex"}


async def test_group_needs_a_group_id(raw, workspace):
    r = await raw.post("/v1/group", json={"userId": "u1", "traits": {}}, headers=_basic(workspace.public_key))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "body.groupId"


async def test_write_key_in_the_body_authenticates(raw, workspace, engine):
    r = await raw.post("/v1/track", json={"writeKey": workspace.public_key, "userId": "u1", "event": "E"})
    assert r.status_code == 200
    assert len(await events_of(engine, workspace.workspace_id)) == 1
    refused = await raw.post("/v1/track", json={"writeKey": "pk_nope", "userId": "u1", "event": "E"})
    assert refused.status_code == 401


async def test_secret_key_is_refused_on_segment_paths(raw, workspace, engine):
    r = await raw.post("/v1/track", json={"userId": "u1", "event": "E"}, headers=_basic(workspace.secret_key))
    assert r.status_code == 403
    assert await events_of(engine, workspace.workspace_id) == []


@pytest.mark.parametrize("path", ["/v1/batch", "/b", "/v1/import", "/track/batch"])
async def test_gzip_batch_of_every_call_type(raw, workspace, engine, path):
    batch = [
        {"type": "identify", "userId": "u1", "traits": {"email": "bo@example.com"}, "messageId": "m1"},
        {"type": "track", "userId": "u1", "event": "Bought", "messageId": "m2"},
        {"type": "page", "userId": "u1", "name": "Home", "messageId": "m3"},
        {"type": "screen", "userId": "u1", "name": "Cart", "messageId": "m4"},
        {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"n": 1}, "messageId": "m5"},
        {"type": "alias", "userId": "u1", "previousId": "prev", "messageId": "m6"},
    ]
    body = gzip.compress(orjson.dumps({"batch": batch, "sentAt": datetime.now(UTC).isoformat()}))
    headers = {**_basic(workspace.public_key), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    r = await raw.post(path, content=body, headers=headers)
    assert r.status_code == 200, r.text
    events = await events_of(engine, workspace.workspace_id)
    assert sorted(e["name"] for e in events) == ["Bought", "Page Viewed", "Screen Viewed"]
    [profile] = await profiles_of(engine, workspace.workspace_id)
    assert profile["email"] == "bo@example.com" and profile["traits"]["group_g1"]["n"] == 1
    again = await raw.post(path, content=body, headers=headers)
    assert again.json()["duplicates"] == 3


async def test_deflate_bodies_too(raw, workspace, engine):
    body = zlib.compress(orjson.dumps({"userId": "u1", "event": "Deflated"}))
    headers = {**_basic(workspace.public_key), "Content-Encoding": "deflate"}
    assert (await raw.post("/v1/track", content=body, headers=headers)).status_code == 200
    assert [e["name"] for e in await events_of(engine, workspace.workspace_id)] == ["Deflated"]


async def test_bad_and_oversized_gzip_bodies_are_4xx(raw, workspace, engine):
    headers = {**_basic(workspace.public_key), "Content-Encoding": "gzip"}
    assert (await raw.post("/v1/batch", content=b"not gzip", headers=headers)).status_code == 400
    truncated = gzip.compress(orjson.dumps({"batch": [{"userId": "u", "event": "E"}]}))[:-8]
    assert (await raw.post("/v1/batch", content=truncated, headers=headers)).status_code == 400
    # A bomb: a few KB that inflate past the 500 KB batch limit.
    bomb = gzip.compress(b'{"batch": [' + b" " * (MAX_BATCH_BYTES + 10) + b"]}")
    assert len(bomb) < 5000
    assert (await raw.post("/v1/batch", content=bomb, headers=headers)).status_code == 413
    brotli = {**_basic(workspace.public_key), "Content-Encoding": "br"}
    assert (await raw.post("/v1/batch", content=b"{}", headers=brotli)).status_code == 400
    assert await events_of(engine, workspace.workspace_id) == []


async def test_the_seeds_events_form_on_track_batch(tracking, workspace, engine):
    r = await tracking.post(
        "/track/batch",
        json={
            "events": [
                {"email": "cy@example.com", "name": "Signed Up"},
                {"email": "cy@example.com", "name": "Upgraded", "properties": {"plan": "pro"}},
            ]
        },
    )
    assert r.status_code == 200 and r.json()["accepted"] == 2
    events = await events_of(engine, workspace.workspace_id)
    assert sorted(e["name"] for e in events) == ["Signed Up", "Upgraded"]
    assert {e["email"] for e in events} == {"cy@example.com"}


async def test_sent_at_corrects_a_browser_clock(tracking, workspace, engine):
    # The device clock is 2 hours behind: the call happened 5 s before it
    # was sent, so it is stored about 5 s before its receipt.
    skew = timedelta(hours=2)
    now = datetime.now(UTC)
    sent = now - skew
    call = {
        "type": "track",
        "anonymousId": "a1",
        "event": "Clicked",
        "messageId": "skewed-1",
        "timestamp": (sent - timedelta(seconds=5)).isoformat(),
        "context": {"library": {"name": "analytics.js", "version": "2"}},
    }
    r = await tracking.post("/v1/batch", json={"batch": [call], "sentAt": sent.isoformat()})
    assert r.status_code == 200
    [event] = await events_of(engine, workspace.workspace_id)
    assert abs(event["occurred_at"] - (event["received_at"] - timedelta(seconds=5))) < timedelta(seconds=1)
    # The retry (sent later, so corrected differently) is the same event.
    call_later = {**call, "sentAt": (sent + timedelta(seconds=30)).isoformat()}
    again = await tracking.post("/v1/track", json=call_later)
    assert again.json()["duplicates"] == 1
    assert len(await events_of(engine, workspace.workspace_id)) == 1


async def test_server_library_timestamps_are_kept(tracking, workspace, engine):
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    call = {
        "userId": "u1",
        "event": "Imported",
        "timestamp": stamp.isoformat(),
        "context": {"library": {"name": "analytics-python", "version": "2.3"}},
    }
    r = await tracking.post("/v1/batch", json={"batch": [call], "sentAt": datetime.now(UTC).isoformat()})
    assert r.status_code == 200
    [event] = await events_of(engine, workspace.workspace_id)
    assert event["occurred_at"] == stamp


async def test_bad_sent_at_is_422(tracking, workspace, engine):
    call = {"userId": "u1", "event": "E", "timestamp": "2026-01-01T00:00:00Z", "context": {"userAgent": "x"}}
    r = await tracking.post("/v1/batch", json={"batch": [call], "sentAt": "yesterday"})
    assert r.status_code == 422
    far = {**call, "sentAt": "0001-01-01T00:00:00Z", "timestamp": "9999-12-31T00:00:00Z"}
    assert (await tracking.post("/v1/track", json=far)).status_code == 422
    assert await events_of(engine, workspace.workspace_id) == []


async def test_identify_puts_the_context_timezone_on_the_profile(tracking, workspace, engine):
    ctx = {"timezone": "America/New_York"}
    await tracking.post("/v1/identify", json={"userId": "u1", "traits": {"plan": "pro"}, "context": ctx})
    await tracking.post(
        "/v1/identify", json={"userId": "u2", "traits": {}, "context": {"timezone": "Mars/Base"}}
    )
    await tracking.post(
        "/v1/identify", json={"userId": "u3", "traits": {"timezone": "Asia/Tokyo"}, "context": ctx}
    )
    traits = {p["external_id"]: p["traits"] for p in await profiles_of(engine, workspace.workspace_id)}
    assert traits["u1"] == {"plan": "pro", "timezone": "America/New_York"}
    assert "timezone" not in traits["u2"]  # not a real zone
    assert traits["u3"]["timezone"] == "Asia/Tokyo"  # an explicit trait wins


async def test_preflight_of_tracking_paths(raw):
    r = await raw.options(
        "/v1/batch",
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"]
    assert "content-encoding" in r.headers["access-control-allow-headers"]
    assert r.headers["vary"] == "Origin"


async def test_cors_headers_on_answers_and_errors(raw, workspace):
    origin = {"Origin": "https://shop.example.com"}
    ok = await raw.post(
        "/track", json={"userId": "u", "event": "E"}, headers={**origin, **_basic(workspace.public_key)}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "Retry-After" in ok.headers["access-control-expose-headers"]
    # A 4xx is readable by the page too, so the SDK knows not to retry it.
    bad = await raw.post("/track", json={"userId": "u"}, headers={**origin, **_basic(workspace.public_key)})
    assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == "https://shop.example.com"
    unauthorized = await raw.post("/track", json={"userId": "u", "event": "E"}, headers=origin)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == "https://shop.example.com"
    # Server-to-server calls have no Origin and get no CORS headers.
    plain = await raw.post("/track", json={"userId": "u", "event": "E"}, headers=_basic(workspace.public_key))
    assert "access-control-allow-origin" not in plain.headers


async def test_allowed_origins_of_a_workspace(raw, api, workspace, engine):
    settings = (await api.get("/api/v1/workspace/settings")).json()
    assert settings["allowed_origins"] is None
    r = await api.put(
        "/api/v1/workspace/settings",
        json={**settings, "allowed_origins": ["https://Shop.Example.com/", "http://localhost:8080"]},
    )
    assert r.status_code == 200
    assert r.json()["allowed_origins"] == ["http://localhost:8080", "https://shop.example.com"]
    bad = await api.put("/api/v1/workspace/settings", json={**settings, "allowed_origins": ["*"]})
    assert bad.status_code == 422
    # The setting is read with the key (this key was not used before, so
    # no cached answer predates it; a change reaches tracking within
    # KEY_CACHE_SECONDS).
    key = _basic(workspace.public_key)
    allowed = await raw.post(
        "/track",
        json={"userId": "u", "event": "Allowed"},
        headers={**key, "Origin": "https://shop.example.com"},
    )
    assert allowed.status_code == 200
    refused = await raw.post(
        "/track",
        json={"userId": "u", "event": "Refused"},
        headers={**key, "Origin": "https://evil.example.com"},
    )
    assert refused.status_code == 403
    assert "allowed_origins" in refused.json()["detail"]
    # Calls without an Origin (servers, Segment's server libraries) are not browsers.
    server = await raw.post("/track", json={"userId": "u", "event": "Server"}, headers=key)
    assert server.status_code == 200
    names = sorted(e["name"] for e in await events_of(engine, workspace.workspace_id))
    assert names == ["Allowed", "Server"]


async def test_sdk_js_is_served_with_caching_headers(raw):
    r = await raw.get("/sdk.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert "max-age=" in r.headers["cache-control"] and "public" in r.headers["cache-control"]
    assert b"window.marketing" in r.content or b"marketing=" in r.content
    etag = r.headers["etag"]
    cached = await raw.get("/sdk.js", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
