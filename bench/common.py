"""What the benchmarks share: a fresh, migrated database for each run, and how
helper apps are served."""

from __future__ import annotations

import asyncio

from db.migrate import upgrade
from tests.support.services import create_database, drop_database

# How the bench runs a helper ASGI app (a fake provider, the bare baseline):
# the fastest uvicorn stack, quiet, so it measures the platform and not itself.
FAST_UVICORN = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


async def add_sendgrid(
    session, workspace_id, settings, base_url: str, name: str = "fake", priority: int = 10
):
    """A SendGrid provider at `base_url` (a local fake, or a port nobody
    listens on), created through the platform's own service."""
    from core.secret_box import SecretBox
    from delivery import service
    from delivery.schemas import ProviderCreate

    return await service.create_provider(
        session,
        workspace_id,
        ProviderCreate(
            name=name,
            kind="sendgrid",
            priority=priority,
            settings={"base_url": base_url},
            credentials={"api_key": "k"},
        ),
        settings.tracking_url,
        box=SecretBox.from_settings(settings),
        allow_private_hosts=True,
    )


async def fresh_database(server: str, prefix: str) -> str:
    """Create and migrate a database on `server`; returns its URL."""
    url = await create_database(server, prefix)
    await asyncio.to_thread(upgrade, url)
    return url


__all__ = ["add_sendgrid", "drop_database", "fresh_database"]
