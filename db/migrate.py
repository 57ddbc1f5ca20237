"""Run Alembic migrations programmatically (used by `mp db upgrade`, `mp up`
and the test suite), so no alembic.ini has to be found on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from core.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at this package's migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head", settings: Settings | None = None) -> None:
    """Bring the database at `database_url` to `revision`. Blocking: call it
    from a thread when an event loop is running. `settings` give migrations
    that need them (the provider secrets key) the apps' own values; without
    them, migrations read the environment."""
    cfg = alembic_config(database_url)
    cfg.attributes["settings"] = settings
    command.upgrade(cfg, revision)


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    import asyncio

    from sqlalchemy import text

    from db.engine import create_engine

    async def _read() -> str | None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
                if not exists:
                    return None
                return await conn.scalar(text("SELECT version_num FROM alembic_version"))
        finally:
            await engine.dispose()

    return asyncio.run(_read())
