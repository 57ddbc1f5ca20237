"""A database of a migration test's own, with the Alembic config that
moves it between revisions (so later migrations are never downgraded
under the suite's shared database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from db.engine import create_engine
from db.migrate import alembic_config
from tests.support import services


@asynccontextmanager
async def own_database(pg_server: str, settings: Settings) -> AsyncIterator[tuple[AsyncEngine, Config]]:
    """An empty database (no revision applied yet), its engine and Alembic
    config; dropped afterwards."""
    url = await services.create_database(pg_server)
    cfg = alembic_config(url)
    cfg.attributes["settings"] = Settings(**(settings.model_dump() | {"database_url": url}))
    engine = create_engine(url, pool_size=2)
    try:
        yield engine, cfg
    finally:
        await engine.dispose()
        await services.drop_database(pg_server, url)
