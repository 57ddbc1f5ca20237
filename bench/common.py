"""What the benchmarks share: a fresh, migrated database for each run."""

from __future__ import annotations

import asyncio

from db.migrate import upgrade
from tests.support.services import create_database, drop_database


async def fresh_database(server: str, prefix: str) -> str:
    """Create and migrate a database on `server`; returns its URL."""
    url = await create_database(server, prefix)
    await asyncio.to_thread(upgrade, url)
    return url


__all__ = ["drop_database", "fresh_database"]
