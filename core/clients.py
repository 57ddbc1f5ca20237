"""Client factories, called once per process at start-up."""

from __future__ import annotations

import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.settings import Settings


def create_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client (connections made lazily)."""
    return aioredis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
    )


async def connect_temporal(settings: Settings) -> Client:
    """A Temporal client with the pydantic data converter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
