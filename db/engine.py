"""Engine and session factories, built once per process and injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from core.settings import to_asyncpg_dsn, to_sqlalchemy_url


def _json_serializer(value: object) -> str:
    return orjson.dumps(value).decode()


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async SQLAlchemy engine on asyncpg."""
    return create_async_engine(
        to_sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that never expire loaded rows on commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on error."""
    async with sessionmaker() as session, session.begin():
        yield session


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


# Ingestion statements join a JSON recordset of at most a few thousand keys
# to unique indexes. PostgreSQL guesses 100 rows for any recordset and,
# against a small table, prefers hashing the whole table; lookups by index
# are always right here, so those join methods are off for this pool.
INGEST_SERVER_SETTINGS = {"enable_hashjoin": "off", "enable_mergejoin": "off"}


async def create_asyncpg_pool(
    database_url: str,
    *,
    size: int,
    min_size: int,
    command_timeout: float,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """A raw asyncpg pool for hot paths (tracking ingestion, the send path)
    where SQLAlchemy's per-statement overhead matters. Sizes and the
    statement timeout come from Settings."""
    return await asyncpg.create_pool(
        to_asyncpg_dsn(database_url),
        min_size=min(min_size, size),
        max_size=size,
        init=_init_connection,
        command_timeout=command_timeout,
        server_settings=server_settings,
        reset=_reset_only_if_dirty,
    )


async def _reset_only_if_dirty(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset costs a round trip per release; ingestion
    # never changes session state, so only a connection left inside a
    # transaction (a cancelled task) needs care, and is simply dropped.
    if conn.is_in_transaction():
        conn.terminate()


async def driver_connection(conn: AsyncConnection | AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy connection or session, in
    the same transaction: modules that speak raw asyncpg (the event
    writer) join the caller's transaction through it."""
    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    if not raw.is_in_transaction() and conn.in_transaction():
        # SQLAlchemy opens its BEGIN with the first statement: send one.
        await conn.execute(text("SELECT 1"))
    return raw
