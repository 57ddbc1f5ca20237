"""Read-your-writes: once a write endpoint has answered, an immediate read
through the API sees the write.

The management API used to commit in the session dependency's exit, which
FastAPI runs after the response is sent, so a client could read before the
commit landed (up to 28 of 250 reads 404'd on a loaded machine). Here `mp
api` runs as a process of its own on a free port, against a database
whose commits take 50 ms (a deferred trigger sleeps at commit, as a busy
disk's fsync would), so that window is wide enough to hit every time; each
test fires many write-then-read pairs at once and requires every read to
see its write.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import httpx
import pytest

from core.settings import Settings, to_asyncpg_dsn
from db.engine import create_engine, create_sessionmaker, session_scope
from db.migrate import upgrade
from tests.support import services
from tests.support.servers import serve_process
from workspaces.service import WorkspaceKeys, create_workspace_keys

PAIRS = 100
# Fewer at once than the API has pooled connections: a read that waits for
# a connection freed by a commit would hide the race.
CONCURRENCY = 8
PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
SLOW_TABLES = ("workspaces", "profiles", "segments", "templates", "providers", "suppressions")
SLOW_COMMIT = """
CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
""" + "".join(
    f"CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE OR DELETE ON {table}"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit();"
    for table in SLOW_TABLES
)


@pytest.fixture(scope="module")
async def slow_settings(pg_server: str, settings: Settings) -> AsyncIterator[Settings]:
    """Settings of a database of this module's own whose commits are slow."""
    url = await services.create_database(pg_server, "mp_test_ryw")
    await asyncio.to_thread(upgrade, url)
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        await conn.execute(SLOW_COMMIT)
    finally:
        await conn.close()
    yield settings.model_copy(update={"database_url": url})
    await services.drop_database(pg_server, url)


@pytest.fixture(scope="module")
async def sessionmaker(slow_settings: Settings):
    engine = create_engine(slow_settings.database_url, pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _new_keys(sessionmaker) -> WorkspaceKeys:
    async with session_scope(sessionmaker) as session:
        return await create_workspace_keys(session, f"ryw-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
async def api_url(slow_settings: Settings) -> AsyncIterator[str]:
    async with serve_process("api", slow_settings) as url:
        yield url


@pytest.fixture
async def client(api_url, sessionmaker) -> AsyncIterator[httpx.AsyncClient]:
    keys = await _new_keys(sessionmaker)
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout:
    # one the server closes just as a request goes out is a client-side
    # ReadError, not what this test is about.
    limits = httpx.Limits(max_connections=PAIRS, max_keepalive_connections=PAIRS, keepalive_expiry=2)
    async with httpx.AsyncClient(
        base_url=api_url,
        headers={"Authorization": f"Bearer {keys.secret_key}"},
        timeout=60,
        limits=limits,
    ) as http:
        yield http


async def _all_see_their_write(pair: Callable[[int], Awaitable[str | None]]) -> None:
    """Run `PAIRS` write-then-read pairs, `CONCURRENCY` at a time; each returns None when
    its read saw the write, else a description of what it saw."""
    running = asyncio.Semaphore(CONCURRENCY)

    async def limited(n: int) -> str | None:
        async with running:
            return await pair(n)

    failures = [f for f in await asyncio.gather(*(limited(n) for n in range(PAIRS))) if f is not None]
    assert failures == [], f"{len(failures)} of {PAIRS} reads missed their write: {failures[:5]}"


def _created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_profile_create_update_delete_are_visible_at_once(client):
    async def pair(n: int) -> str | None:
        profile_id = _created(await client.post("/api/v1/profiles", json={"email": f"ryw{n}@example.com"}))
        got = await client.get(f"/api/v1/profiles/{profile_id}")
        if got.status_code != 200:
            return f"create: GET {got.status_code}"
        patched = await client.patch(f"/api/v1/profiles/{profile_id}", json={"traits": {"n": n}})
        assert patched.status_code == 200, patched.text
        got = await client.get(f"/api/v1/profiles/{profile_id}")
        if got.json().get("traits", {}).get("n") != n:
            return f"update: traits {got.json().get('traits')}"
        assert (await client.delete(f"/api/v1/profiles/{profile_id}")).status_code == 204
        got = await client.get(f"/api/v1/profiles/{profile_id}")
        return None if got.status_code == 404 else f"delete: GET {got.status_code}"

    await _all_see_their_write(pair)


async def test_segment_is_visible_at_once(client):
    async def pair(n: int) -> str | None:
        body = {"name": f"ryw {n}", "definition": PRO}
        segment_id = _created(await client.post("/api/v1/segments", json=body))
        got = await client.get(f"/api/v1/segments/{segment_id}")
        return None if got.status_code == 200 else f"GET {got.status_code}"

    await _all_see_their_write(pair)


async def test_template_is_visible_at_once(client):
    async def pair(n: int) -> str | None:
        body = {"name": f"ryw {n}", "subject": "s", "html": "<p>h</p>", "from_email": "from@example.com"}
        template_id = _created(await client.post("/api/v1/templates", json=body))
        got = await client.get(f"/api/v1/templates/{template_id}")
        return None if got.status_code == 200 else f"GET {got.status_code}"

    await _all_see_their_write(pair)


async def test_provider_is_visible_at_once(client):
    async def pair(n: int) -> str | None:
        body = {
            "name": f"ryw {n}",
            "kind": "sendgrid",
            "priority": n,
            "settings": {"base_url": "https://api.sendgrid.com"},
            "credentials": {"api_key": "SG.key"},
        }
        provider_id = _created(await client.post("/api/v1/providers", json=body))
        got = await client.get(f"/api/v1/providers/{provider_id}")
        return None if got.status_code == 200 else f"GET {got.status_code}"

    await _all_see_their_write(pair)


async def test_suppression_is_visible_at_once(client):
    async def pair(n: int) -> str | None:
        email = f"gone{n}@example.com"
        added = await client.post("/api/v1/suppressions", json={"email": email})
        assert added.status_code == 201, added.text
        # There is no GET of one suppression; removing it needs the row (404 otherwise).
        removed = await client.delete(f"/api/v1/suppressions/{email}")
        return None if removed.status_code == 204 else f"DELETE {removed.status_code}"

    await _all_see_their_write(pair)


async def test_workspace_settings_are_visible_at_once(api_url, sessionmaker):
    # One workspace per pair: concurrent PUTs to one workspace would race each other.
    workspaces = [await _new_keys(sessionmaker) for _ in range(PAIRS)]
    limits = httpx.Limits(max_connections=PAIRS, max_keepalive_connections=PAIRS, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as http:

        async def pair(n: int) -> str | None:
            headers = {"Authorization": f"Bearer {workspaces[n].secret_key}"}
            minutes = 2 + n
            put = await http.put(
                "/api/v1/workspace/settings", json={"segment_refresh_minutes": minutes}, headers=headers
            )
            assert put.status_code == 200, put.text
            got = (await http.get("/api/v1/workspace/settings", headers=headers)).json()
            return None if got["segment_refresh_minutes"] == minutes else f"GET {got}"

        await _all_see_their_write(pair)


# Write endpoints that commit their own transaction before starting a
# workflow (api/email.py `_send`, campaigns.service.send_test), so the
# workflow always finds the row.
OWN_TRANSACTION = {
    ("POST", "/api/v1/messages"),
    ("POST", "/api/v1/templates/{template_id}/test"),
    ("POST", "/api/v1/campaigns/{campaign_id}/test"),
}


def _session_scopes(dependant) -> list[str | None]:
    """The scope of every `get_session` in a route's dependency tree."""
    from api.deps import get_session

    found = [dependant.scope] if dependant.call is get_session else []
    for sub in dependant.dependencies:
        found += _session_scopes(sub)
    return found


def _api_routes(routes) -> Iterator:
    """Every APIRoute, including those of included routers (which newer
    FastAPI keeps as one entry per router)."""
    from fastapi.routing import APIRoute

    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def test_every_write_endpoint_commits_before_it_answers(settings):
    """A new router cannot forget: every route's session is function-scoped
    (committed before the response), and every write route has one or is
    known to commit its own transaction."""
    from api.app import create_app

    routes = list(_api_routes(create_app(settings).routes))
    writes = 0
    for route in routes:
        scopes = _session_scopes(route.dependant)
        assert all(scope == "function" for scope in scopes), (route.path, scopes)
        for method in route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            writes += 1
            assert scopes or (method, route.path) in OWN_TRANSACTION, f"{method} {route.path} has no session"
    assert writes >= 15  # the walk saw the write endpoints
