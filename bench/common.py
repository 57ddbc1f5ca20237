"""What the benchmarks share: a fresh, migrated database for each run, and how
helper apps are served."""

from __future__ import annotations

import asyncio

from db.migrate import upgrade
from tests.support.services import create_database, drop_database

# How the bench runs a helper ASGI app (a fake provider, the bare baseline):
# the fastest uvicorn stack, quiet, so it measures the platform and not itself.
FAST_UVICORN = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


async def fresh_database(server: str, prefix: str) -> str:
    """Create and migrate a database on `server`; returns its URL."""
    url = await create_database(server, prefix)
    await asyncio.to_thread(upgrade, url)
    return url


__all__ = ["drop_database", "fresh_database"]
