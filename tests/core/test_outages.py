"""Outages of PostgreSQL, Redis and Temporal, for real: both apps answer
503 with `Retry-After` (never a 500 or a dropped connection) while a
dependency is down, and serve again once it is back, without a restart.

These tests stop and start servers of their own (the suite's PostgreSQL,
Redis and Temporal are shared with other tests): an embedded PostgreSQL and
Redis on free ports in a temporary directory, and a Temporal dev server.
"""

from __future__ import annotations

import asyncio
import errno
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.exceptions
import sqlalchemy.exc
from temporalio.service import RPCError, RPCStatusCode

from cli import embedded
from core.errors import RETRY_AFTER_SECONDS, as_outage
from core.settings import Settings
from db.engine import create_engine, create_sessionmaker, session_scope
from db.migrate import upgrade
from delivery.links import KIND_CLICK, LinkSigner
from tests.support.servers import free_port, serve
from tests.support.services import temporal_child
from workspaces.service import WorkspaceKeys, create_workspace_keys

KEY_CACHE_SECONDS = 1.0
PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}


@dataclass
class Stack:
    """Servers this module owns, and settings pointing at them."""

    postgres: embedded.Child
    postgres_port: int
    redis: embedded.Child
    redis_port: int
    settings: Settings
    keys: WorkspaceKeys

    def stop_postgres(self) -> None:
        self.postgres.stop()
        assert not embedded.port_open(self.postgres_port)

    def start_postgres(self) -> None:
        self.postgres.start()  # same data directory, same port
        embedded.wait_for_port(self.postgres, self.postgres_port, 60)

    def stop_redis(self) -> None:
        self.redis.stop()
        assert not embedded.port_open(self.redis_port)

    def start_redis(self) -> None:
        self.redis.start()
        embedded.wait_for_port(self.redis, self.redis_port, 30)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, settings: Settings) -> AsyncIterator[Stack]:
    data = Path(tmp_path_factory.mktemp("outages"))
    (data / "logs").mkdir()
    pg_port, redis_port = free_port(), free_port()
    postgres = embedded.postgres_child(data, pg_port)
    redis = embedded.redis_child(data, redis_port)
    postgres.start()
    redis.start()
    try:
        embedded.wait_for_port(postgres, pg_port, 60)
        embedded.wait_for_port(redis, redis_port, 30)
        await asyncio.to_thread(embedded.ensure_database, pg_port, "mp")
        database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/mp"
        await asyncio.to_thread(upgrade, database_url)
        engine = create_engine(database_url, pool_size=1)
        async with session_scope(create_sessionmaker(engine)) as session:
            keys = await create_workspace_keys(session, "outages")
        await engine.dispose()
        own = settings.model_copy(
            update={
                "database_url": database_url,
                "redis_url": f"redis://127.0.0.1:{redis_port}/0",
                "key_cache_seconds": KEY_CACHE_SECONDS,
            }
        )
        yield Stack(postgres, pg_port, redis, redis_port, own, keys)
    finally:
        redis.stop()
        postgres.stop()


@pytest.fixture(scope="module")
async def apps(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(management API client, tracking client), both apps served by uvicorn."""
    from api.app import create_app as create_api
    from tracking.app import create_app as create_tracking

    async with (
        serve(create_api(stack.settings)) as api_url,
        serve(create_tracking(stack.settings)) as tracking_url,
        httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {stack.keys.secret_key}"}, timeout=60
        ) as api,
        httpx.AsyncClient(
            base_url=tracking_url, headers={"Authorization": f"Bearer {stack.keys.public_key}"}, timeout=60
        ) as tracking,
    ):
        yield api, tracking


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["error"] == "unavailable", r.text
    assert int(r.headers["retry-after"]) > 0


def _client_port(r: httpx.Response) -> int | None:
    """The local port of the connection that carried `r`; None once the
    server has closed it."""
    try:
        return r.extensions["network_stream"].get_extra_info("client_addr")[1]
    except OSError:  # EBADF: the socket is gone
        return None


async def _kept_open(client: httpx.AsyncClient, path: str) -> list[httpx.Response]:
    """Two requests in a row; asserts they arrived on one connection: the
    server answered without closing it (an error escaping to uvicorn after
    the response started makes it drop the connection)."""
    first = await client.get(path)
    port = _client_port(first)
    second = await client.get(path)
    assert port is not None and port == _client_port(second), "the server closed the connection"
    return [first, second]


async def _until_ok(
    call: Callable[[], Awaitable[httpx.Response]], ok: int, timeout: float = 30
) -> httpx.Response:
    """Retry `call` (as a client honouring Retry-After would, only faster)
    until it answers `ok`; every answer before that must be a 503."""
    deadline = time.monotonic() + timeout
    while True:
        r = await call()
        if r.status_code == ok:
            return r
        _assert_unavailable(r)
        assert time.monotonic() < deadline, f"still {r.status_code} after {timeout}s: {r.text}"
        await asyncio.sleep(0.2)


async def _warm(api: httpx.AsyncClient, tracking: httpx.AsyncClient) -> None:
    """Both apps serve, and both have the workspace's key cached."""
    assert (await api.get("/api/v1/profiles")).status_code == 200
    r = await tracking.post("/track", json={"userId": "u1", "event": "Warm"})
    assert r.status_code == 200, r.text


async def test_postgres_outage_is_503_on_both_apps_until_it_returns(stack: Stack, apps):
    api, tracking = apps
    click = f"/c/{LinkSigner(stack.settings.secret_key).token(uuid.uuid4(), KIND_CLICK)}"
    await _warm(api, tracking)

    await asyncio.to_thread(stack.stop_postgres)
    try:
        # Keys still cached: the failure is in the handler's own queries
        # (tracking: the group commit).
        _assert_unavailable(await tracking.post("/track", json={"userId": "u1", "event": "Down"}))
        _assert_unavailable(await api.get("/api/v1/profiles"))
        _assert_unavailable(await api.post("/api/v1/profiles", json={"email": "down@example.com"}))
        # Many at once share group commits; each gets its 503 promptly.
        started = time.monotonic()
        calls = [tracking.post("/track", json={"userId": f"u{n}", "event": "Down"}) for n in range(50)]
        for r in await asyncio.gather(*calls):
            _assert_unavailable(r)
        assert time.monotonic() - started < 5, "503s should not wait for anything"
        # Key cache expired: the key re-check itself cannot reach PostgreSQL.
        await asyncio.sleep(KEY_CACHE_SECONDS + 0.2)
        _assert_unavailable(await tracking.post("/track", json={"userId": "u1", "event": "Down"}))
        _assert_unavailable(
            await tracking.post("/track/batch", json={"batch": [{"userId": "u1", "event": "D"}]})
        )
        _assert_unavailable(await api.get("/api/v1/segments"))
        for r in [*await _kept_open(api, "/api/v1/profiles"), *await _kept_open(tracking, click)]:
            _assert_unavailable(r)
        # Tracking's FastAPI routes (engagement links) answer the same way.
        _assert_unavailable(await tracking.get(click))
    finally:
        await asyncio.to_thread(stack.start_postgres)

    # Back without restarting either app.
    await _until_ok(lambda: tracking.post("/track", json={"userId": "u1", "event": "Back"}), 200)
    await _until_ok(lambda: api.post("/api/v1/profiles", json={"email": "back@example.com"}), 201)
    await _until_ok(lambda: tracking.get(click), 404)
    for _ in range(10):
        assert (await tracking.post("/track", json={"userId": "u1", "event": "Back"})).status_code == 200
        assert (await api.get("/api/v1/profiles")).status_code == 200
    found = (await api.get("/api/v1/profiles", params={"email": "back@example.com"})).json()["data"]
    assert len(found) == 1


async def test_redis_outage_keeps_tracking_and_the_api_serving(stack: Stack, apps):
    """Neither app needs Redis to answer: tracking loses only the retry pin of
    calls with a messageId and no timestamp, and queued segment re-checks
    (the scheduled refresh catches up)."""
    api, tracking = apps
    await _warm(api, tracking)
    await asyncio.to_thread(stack.stop_redis)
    try:
        for n in range(3):
            r = await tracking.post(
                "/track", json={"userId": "u2", "event": "No Redis", "messageId": f"no-redis-{n}"}
            )
            assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        assert (await api.get("/api/v1/profiles")).status_code == 200
    finally:
        await asyncio.to_thread(stack.start_redis)
    r = await tracking.post("/track", json={"userId": "u2", "event": "Redis back", "messageId": "redis-back"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    # With Redis back the pin works again: a retry of the same call is a duplicate.
    again = await tracking.post(
        "/track", json={"userId": "u2", "event": "Redis back", "messageId": "redis-back"}
    )
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text


async def test_temporal_outage_is_503_for_workflow_starts_until_it_returns(stack: Stack, tmp_path):
    """Starting a refresh or a send is 503 + Retry-After while Temporal is
    unreachable — before the API ever reached it, and after it went away —
    and everything else still serves; once Temporal answers, the same
    requests succeed without restarting the API."""
    from api.app import create_app as create_api

    port = free_port()
    temporal = temporal_child(tmp_path, port)
    settings = stack.settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
    try:
        async with (
            serve(create_api(settings)) as url,
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {stack.keys.secret_key}"}, timeout=60
            ) as api,
        ):
            segment = (await api.post("/api/v1/segments", json={"name": "Pro", "definition": PRO})).json()
            recalculate = f"/api/v1/segments/{segment['id']}/recalculate"
            template = await api.post(
                "/api/v1/templates",
                json={"name": "T", "subject": "s", "html": "<p>h</p>", "from_email": "from@example.com"},
            )
            send = {"template_id": template.json()["id"], "email": "to@example.com", "idempotency_key": "k1"}
            # Not started yet: the API has never reached Temporal.
            _assert_unavailable(await api.post(recalculate, params={"wait": 0}))
            _assert_unavailable(await api.post("/api/v1/messages", json=send))

            temporal.start()
            await asyncio.to_thread(embedded.wait_for_port, temporal, port, 90)
            await _until_ok(lambda: api.post(recalculate, params={"wait": 0}), 200, timeout=60)

            await asyncio.to_thread(temporal.stop)  # gone after the API connected
            _assert_unavailable(await api.post(recalculate, params={"wait": 0}))
            _assert_unavailable(await api.post("/api/v1/messages", json=send))
            assert (await api.get(f"/api/v1/segments/{segment['id']}")).status_code == 200

            temporal.start()  # a fresh dev server on the same address
            await asyncio.to_thread(embedded.wait_for_port, temporal, port, 90)
            await _until_ok(lambda: api.post(recalculate, params={"wait": 0}), 200, timeout=60)
            started = await _until_ok(lambda: api.post("/api/v1/messages", json=send), 202, timeout=60)
            # The idempotency key still names one message.
            again = await api.post("/api/v1/messages", json=send)
            assert again.status_code == 202 and again.json()["id"] == started.json()["id"]
    finally:
        temporal.stop()


def _raised(exc: BaseException, cause: BaseException | None) -> BaseException:
    """`exc` as raised `from cause` (None: `from None`)."""
    try:
        raise exc from cause
    except BaseException as caught:  # noqa: BLE001 - returned to the test
        return caught


def test_only_unreachable_services_count_as_outages():
    """Bugs and bad data stay 500/4xx; only an unreachable service is a 503."""
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    outages = {
        refused: "a backing service",
        asyncpg.CannotConnectNowError("the database system is starting up"): "PostgreSQL",
        asyncpg.TooManyConnectionsError("too many clients"): "PostgreSQL",
        asyncpg.InterfaceError("connection is closed"): "PostgreSQL",
        sqlalchemy.exc.DBAPIError(
            "SELECT 1", {}, Exception("gone"), connection_invalidated=True
        ): "PostgreSQL",
        redis.exceptions.ConnectionError("Connection refused"): "Redis",
        RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b""): "Temporal",
        _raised(RuntimeError("while querying"), refused): "a backing service",
    }
    for exc, service in outages.items():
        outage = as_outage(exc)
        assert outage is not None and outage.detail.startswith(service), (exc, outage)
        assert outage.status_code == 503 and outage.headers()["Retry-After"] == str(RETRY_AFTER_SECONDS)
    not_outages = [
        ValueError("bad"),
        FileNotFoundError(errno.ENOENT, "no such file"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.DataError("value out of int64 range"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        RPCError("bad request", RPCStatusCode.INVALID_ARGUMENT, b""),
        _raised(KeyError("x"), None),
    ]
    for exc in not_outages:
        assert as_outage(exc) is None, exc
