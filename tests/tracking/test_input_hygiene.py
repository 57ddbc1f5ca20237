"""Tracking API: input the platform could not store or read back is refused
with a 4xx naming the field (deep nesting, huge numbers, odd timestamps),
and what is accepted stays readable through the management API."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from definitions.limits import MAX_JSON_DEPTH
from tests.support.db import count


def _nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _raw_nested(levels: int) -> bytes:
    return (
        b'{"userId": "u1", "event": "Deep", "properties": ' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"
    )


async def _events(engine, workspace) -> int:
    return await count(
        engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=workspace.workspace_id
    )


async def test_nesting_at_the_limit_is_stored_and_readable(tracking, api, workspace):
    r = await tracking.post(
        "/identify", json={"userId": "deep-ok", "traits": {"t": _nested(MAX_JSON_DEPTH - 1)}}
    )
    assert r.status_code == 200, r.text
    r = await api.get("/api/v1/profiles", params={"external_id": "deep-ok"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    profile_id = r.json()["data"][0]["id"]
    assert (await api.get(f"/api/v1/profiles/{profile_id}")).status_code == 200


@pytest.mark.parametrize("field", ["properties", "context"])
async def test_nesting_past_the_limit_is_422_naming_the_field(tracking, workspace, engine, field):
    body = {"userId": "u1", "event": "Deep", field: _nested(MAX_JSON_DEPTH + 1)}
    r = await tracking.post("/track", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert r.json()["detail"][0]["loc"].startswith(f"body.{field}")
    assert "nested deeper than 32 levels" in r.json()["detail"][0]["msg"]
    assert await _events(engine, workspace) == 0


async def test_deep_traits_are_refused_and_the_profile_stays_readable(tracking, api, workspace):
    # 252 levels used to be stored, and every read of the profile failed after.
    r = await tracking.post("/identify", json={"userId": "deep", "traits": {"ok": 1}})
    assert r.status_code == 200
    r = await tracking.post("/identify", json={"userId": "deep", "traits": _nested(252)})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"].startswith("body.traits")
    profiles = (await api.get("/api/v1/profiles", params={"external_id": "deep"})).json()["data"]
    r = await api.get(f"/api/v1/profiles/{profiles[0]['id']}")
    assert r.status_code == 200 and r.json()["traits"] == {"ok": 1}


@pytest.mark.parametrize("levels", [254, 255, 300, 1000, 5000])
async def test_very_deep_bodies_are_4xx_never_500(tracking, workspace, engine, levels):
    r = await tracking.post(
        "/track", content=_raw_nested(levels), headers={"Content-Type": "application/json"}
    )
    assert r.status_code in (400, 413, 422), r.text
    assert r.json()["error"] in ("bad_request", "validation_error", "payload_too_large")
    assert await _events(engine, workspace) == 0


@pytest.mark.parametrize("levels", [40, 300])
async def test_deep_batch_entry_names_its_index(tracking, workspace, engine, levels):
    batch = [
        {"userId": "u1", "event": "Fine"},
        {"userId": "u1", "event": "Deep", "properties": _nested(levels)},
    ]
    r = await tracking.post("/track/batch", json={"batch": batch})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"].startswith("body.batch.1")
    assert await _events(engine, workspace) == 0
    r = await tracking.post("/track/batch", json={"batch": batch[:1], "context": _nested(levels)})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] in ("body.context", "body.batch.0.context")


async def test_integers_past_64_bits_are_kept_as_numbers_that_read_back(tracking, api, workspace):
    # orjson reads them as floats, which every later reader can render.
    raw = b'{"userId": "big", "traits": {"n": 1180591620717411303424, "m": [-99999999999999999999999]}}'
    r = await tracking.post("/identify", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    profile = (await api.get("/api/v1/profiles", params={"external_id": "big"})).json()["data"][0]
    assert profile["traits"] == {"n": 1180591620717411303424.0, "m": [-99999999999999999999999.0]}
    assert (await api.get(f"/api/v1/profiles/{profile['id']}")).status_code == 200


async def test_non_finite_numbers_are_400(tracking, workspace, engine):
    for raw in (b"1e400", b"-1e400", b"NaN", b"Infinity"):
        body = b'{"userId": "u1", "event": "E", "context": {"n": ' + raw + b"}}"
        r = await tracking.post("/track", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
    assert await _events(engine, workspace) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userId": "u1", "event": "E", "properties": {"s": "\\ud800"}}',
        b'{"userId": "u1", "event": "E", "properties": {"\\udfff": 1}}',
        b'{"userId": "\\ud800x", "event": "E"}',
        b'{"userId": "u1", "event": "E", "properties": {"k\\u0000": 1}}',
        b'{"userId": "u1", "event": "E\\u0000"}',
    ],
)
async def test_surrogates_and_nul_are_4xx(tracking, workspace, engine, raw):
    r = await tracking.post("/track", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert await _events(engine, workspace) == 0


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-05-01T10:00:00+16:00",
        "2024-05-01T10:00:00-15:30",
        "2024-05-01T10:00:00+23:59",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-05:00",
        "10000-01-01T00:00:00Z",
        "0000-12-31T00:00:00Z",
    ],
)
async def test_unusable_timestamps_are_422_at_once(tracking, workspace, engine, timestamp):
    started = time.perf_counter()
    r = await tracking.post("/track", json={"userId": "u1", "event": "E", "timestamp": timestamp})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == "body.timestamp"
    assert time.perf_counter() - started < 2  # refused, not retried by the writer
    assert await _events(engine, workspace) == 0


async def test_offsets_within_fourteen_hours_are_stored_in_utc(tracking, workspace, engine):
    r = await tracking.post(
        "/track", json={"userId": "u1", "event": "E", "timestamp": "2024-05-01T10:00:00+14:00"}
    )
    assert r.status_code == 200, r.text
    stored = await count(
        engine,
        "SELECT count(*) FROM events WHERE workspace_id = :ws AND occurred_at = '2024-04-30T20:00:00Z'",
        ws=workspace.workspace_id,
    )
    assert stored == 1


async def test_far_future_timestamps_are_clamped_and_last_seen_stays_sane(tracking, api, workspace, engine):
    before = datetime.now(UTC)
    r = await tracking.post(
        "/track",
        json={"userId": "future", "event": "E", "timestamp": "2999-01-01T00:00:00Z", "messageId": "m-future"},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1
    # A retry of the same call is a duplicate, not a second event.
    r = await tracking.post(
        "/track",
        json={"userId": "future", "event": "E", "timestamp": "2999-01-01T00:00:00Z", "messageId": "m-future"},
    )
    assert r.status_code == 200 and r.json()["duplicates"] == 1
    after = datetime.now(UTC)
    profile = (await api.get("/api/v1/profiles", params={"external_id": "future"})).json()["data"][0]
    assert before <= datetime.fromisoformat(profile["last_seen"]) <= after
    detail = (await api.get(f"/api/v1/profiles/{profile['id']}")).json()
    occurred = datetime.fromisoformat(detail["events"][0]["occurred_at"])
    assert before <= occurred <= after


async def test_slightly_ahead_timestamps_keep_their_time_but_not_last_seen(tracking, api, workspace):
    in_two_hours = datetime.fromtimestamp(int(time.time()) + 7200, UTC)
    r = await tracking.post(
        "/track", json={"userId": "skew", "event": "E", "timestamp": in_two_hours.isoformat()}
    )
    assert r.status_code == 200
    profile = (await api.get("/api/v1/profiles", params={"external_id": "skew"})).json()["data"][0]
    assert datetime.fromisoformat(profile["last_seen"]) <= datetime.now(UTC)
    detail = (await api.get(f"/api/v1/profiles/{profile['id']}")).json()
    assert datetime.fromisoformat(detail["events"][0]["occurred_at"]) == in_two_hours


async def test_bad_offsets_never_slow_good_traffic(tracking, workspace):
    # A few clients sending bad offsets used to fail whole group commits,
    # which the writer split and retried: good requests waited behind them.
    bad = [
        tracking.post(
            "/track", json={"userId": f"b{n}", "event": "E", "timestamp": "2024-05-01T10:00:00+20:00"}
        )
        for n in range(20)
    ]
    good = [tracking.post("/track", json={"userId": f"g{n}", "event": "E"}) for n in range(40)]
    responses = await asyncio.gather(*bad, *good)
    assert [r.status_code for r in responses[:20]] == [422] * 20
    assert [r.status_code for r in responses[20:]] == [200] * 40


@pytest.mark.parametrize(
    "message",
    [
        {"Type": "Notification", "SigningCertURL": ["http://127.0.0.1:1/cert.pem"]},
        {"Type": "Notification", "SigningCertURL": 5},
        {"Type": "Notification", "SigningCertURL": {"url": "x"}},
        {"Type": ["Notification"], "SigningCertURL": "http://127.0.0.1:1/cert.pem"},
        {"Type": {"a": 1}},
        {"Type": "Notification", "SigningCertURL": "http://127.0.0.1:1/c.pem", "Signature": 12},
        {"Type": "Notification", "SigningCertURL": "http://127.0.0.1:1/c.pem", "Message": {"eventType": "x"}},
        {"Type": "Notification", "SigningCertURL": "http://127.0.0.1:1/c.pem", "SignatureVersion": [2]},
        {"Type": "Notification", "SigningCertURL": "http://127.0.0.1:1/c\u0000.pem"},
    ],
)
async def test_sns_messages_with_wrongly_typed_fields_are_refused(api, tracking_app, message):
    r = await api.post(
        "/api/v1/providers", json={"name": "ses-types", "kind": "ses", "settings": {"region": "us-east-1"}}
    )
    assert r.status_code == 201, r.text
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        r = await client.post(f"/webhooks/ses/{r.json()['id']}", json=message)
        assert r.status_code in (400, 401), r.text
        assert r.json()["error"] in ("bad_request", "unauthorized")
        for body in (b"[]", b'"text"', b"12", b"null"):
            r = await client.post(f"/webhooks/ses/{r.request.url.path.rsplit('/', 1)[1]}", content=body)
            assert r.status_code in (400, 401), r.text
