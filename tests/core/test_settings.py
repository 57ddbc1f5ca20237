"""Pool sizes and timeouts come from Settings: the processes build their
clients from them, the defaults keep the old behaviour, and no module in
the service packages hard-codes one again."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import redis.exceptions

from core.clients import create_redis
from core.errors import ServiceUnavailable
from core.settings import Settings
from core.temporal import TemporalConnection
from tests.support.servers import serve

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = ("core", "db", "tracking", "api", "worker", "delivery", "segments")

# The literals these settings replaced: the defaults must keep them.
FORMER_LITERALS = {
    "tracking_engine_pool_size": 2,
    "worker_db_pool_size": 5,
    "db_pool_min_size": 2,
    "email_send_pool_size": 40,
    "email_send_cache_seconds": 5.0,
    "db_command_timeout_seconds": 60.0,
    "redis_socket_timeout_seconds": 5.0,
    "redis_connect_timeout_seconds": 5.0,
    "temporal_connect_timeout_seconds": 10.0,
    "tracking_http_timeout_seconds": 10.0,
    "segment_refresh_timeout_seconds": 3600.0,
    "partitions_run_timeout_seconds": 7200.0,
    "segment_dispatch_timeout_seconds": 600.0,
}

# `name=<number>` for the client options that size a pool or bound a wait.
HARD_CODED = re.compile(
    r"\b(pool_size|max_overflow|min_size|max_size|command_timeout|socket_timeout|"
    r"socket_connect_timeout|connect_timeout|read_timeout|timeout)\s*=\s*\d"
)


def test_defaults_keep_the_former_literals():
    fields = Settings.model_fields
    assert {name: fields[name].default for name in FORMER_LITERALS} == FORMER_LITERALS
    assert all(fields[name].description for name in FORMER_LITERALS)


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT_SECONDS", "1.25")
    monkeypatch.setenv("EMAIL_SEND_POOL_SIZE", "7")
    read = Settings(_env_file=None)
    assert read.redis_socket_timeout_seconds == 1.25
    assert read.email_send_pool_size == 7


def test_no_service_module_hard_codes_a_pool_size_or_timeout():
    found = []
    for package in SERVICE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                # A one-shot migration runs on exactly one connection by design.
                if HARD_CODED.search(code) and "pool_size=1)" not in code:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


async def test_redis_client_uses_the_timeouts_from_settings(settings: Settings):
    tuned = settings.model_copy(
        update={"redis_socket_timeout_seconds": 0.3, "redis_connect_timeout_seconds": 0.7}
    )
    client = create_redis(tuned)
    try:
        assert client.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.7
        assert await client.ping()
        # A blocking pop longer than the socket timeout fails at that timeout.
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.blpop([f"{settings.redis_prefix}never-filled"], timeout=3)
        assert time.monotonic() - started < 2
    finally:
        await client.aclose()


async def test_tracking_pools_and_timeouts_come_from_settings(settings: Settings):
    from tracking.app import create_app

    tuned = settings.model_copy(
        update={
            "tracking_db_pool_size": 3,
            "db_pool_min_size": 1,
            "tracking_engine_pool_size": 1,
            "db_command_timeout_seconds": 0.5,
            "tracking_http_timeout_seconds": 2.5,
        }
    )
    app = create_app(tuned)
    async with serve(app):
        services = app.state.services
        assert (services.pool.get_min_size(), services.pool.get_max_size()) == (1, 3)
        assert services.engine.pool.size() == 1
        assert services.http.timeout.read == 2.5
        async with services.pool.acquire() as conn:
            with pytest.raises(TimeoutError):
                await conn.fetchval("SELECT pg_sleep(3)")


async def test_temporal_connect_gives_up_after_the_configured_timeout(settings: Settings):
    # A server that accepts connections and never answers: only the timeout ends the wait.
    silent: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tuned = settings.model_copy(
        update={"temporal_address": f"127.0.0.1:{port}", "temporal_connect_timeout_seconds": 0.5}
    )
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await TemporalConnection(tuned).get()
        assert time.monotonic() - started < 5
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
