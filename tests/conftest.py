"""Fixtures: one database, Redis prefix, Temporal dev server and set of
HTTP servers per test run; one fresh workspace per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from core.settings import Settings
from db.engine import create_engine, create_sessionmaker, session_scope
from db.migrate import upgrade
from tests.support import services
from tests.support.servers import serve
from workspaces.service import WorkspaceKeys, create_workspace_keys


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with services.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with services.redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    with services.temporal_server() as address:
        yield address


@pytest.fixture(scope="session")
async def database_url(pg_server: str) -> AsyncIterator[str]:
    url = await services.create_database(pg_server)
    await asyncio.to_thread(upgrade, url)
    yield url
    await services.drop_database(pg_server, url)


@pytest.fixture(scope="session")
async def settings(database_url: str, redis_url: str, temporal_address: str) -> AsyncIterator[Settings]:
    run = uuid.uuid4().hex[:8]
    prefix = f"mp_test_{run}:"
    yield Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        temporal_address=temporal_address,
        temporal_task_queue=f"test-{run}",
        key_cache_seconds=0.5,
        breaker_failure_threshold=3,
        breaker_cooldown_seconds=1.5,
        sns_cert_url_pattern=r"^http://127\.0\.0\.1:[0-9]+/",
        secret_key="test-secret",
        # The fake providers listen on 127.0.0.1 (tests/delivery/test_provider_destinations.py
        # checks the refusal with this off).
        allow_private_provider_hosts=True,
        # Two committers per writer, so tests exercise concurrent group
        # commits racing on the same profiles.
        tracking_commit_concurrency=2,
        tracking_commit_spill_events=0,
        # Teardown does not wait long for activities a test left hanging.
        worker_shutdown_seconds=5,
    )
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(scope="session")
async def engine(settings: Settings):
    eng = create_engine(settings.database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine):
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def tracking_app(settings: Settings):
    from tracking.app import create_app

    app = create_app(settings)
    async with serve(app) as url:
        app.state.base_url = url
        yield app


@pytest.fixture(scope="session")
async def api_app(settings: Settings):
    from api.app import create_app

    app = create_app(settings)
    async with serve(app) as url:
        app.state.base_url = url
        yield app


async def new_workspace(sessionmaker, name: str | None = None) -> WorkspaceKeys:
    """A fresh workspace with a key pair."""
    async with session_scope(sessionmaker) as session:
        return await create_workspace_keys(session, name or f"test-{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def workspace(sessionmaker) -> WorkspaceKeys:
    return await new_workspace(sessionmaker)


@pytest.fixture
async def tracking(tracking_app, workspace: WorkspaceKeys) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the tracking API, authorised with the workspace's public key."""
    headers = {"Authorization": f"Bearer {workspace.public_key}"}
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
async def api(api_app, workspace: WorkspaceKeys) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the management API, authorised with the workspace's secret key."""
    headers = {"Authorization": f"Bearer {workspace.secret_key}"}
    async with httpx.AsyncClient(base_url=api_app.state.base_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
async def temporal_client(temporal_address: str):
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    return await Client.connect(temporal_address, data_converter=pydantic_data_converter)


@pytest.fixture(scope="session")
async def redis_client(settings: Settings):
    client = aioredis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def dispatcher(temporal_client, settings: Settings, engine):
    """The worker's outbox dispatcher (not running; the worker fixture runs it)."""
    from worker.registry import build_dispatcher

    return build_dispatcher(engine, temporal_client, settings)


@pytest.fixture(scope="session")
async def worker(temporal_client, settings: Settings, engine, redis_client, dispatcher):
    """The platform's worker and its background loops (the outbox
    dispatcher), polling this run's task queue in-process, registered
    exactly as `mp worker` registers."""
    from worker.main import WorkerClients, background_loops, build_worker
    from worker.registry import build_activities

    stop = asyncio.Event()
    clients = WorkerClients(temporal_client, engine, redis_client, settings, dispatcher)
    activities = build_activities(engine, redis_client, settings, dispatcher)
    async with build_worker(temporal_client, settings, activities) as running:
        loops = [asyncio.create_task(loop) for loop in background_loops(clients, stop)]
        yield running
        stop.set()
        await asyncio.gather(*loops)
