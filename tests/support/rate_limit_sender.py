"""A separate worker process for the shared rate-limit test: sends N
messages through the router to one SendGrid-speaking provider."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import redis.asyncio as aioredis

from delivery.adapters import OutgoingEmail
from delivery.limits import ProviderLimits
from delivery.router import ProviderConfig, ProviderRouter


async def main(config: dict) -> None:
    redis = aioredis.from_url(config["redis_url"])
    router = ProviderRouter(
        ProviderLimits(redis, config["prefix"]), max_rate_wait=30, allow_private_hosts=True
    )
    provider = ProviderConfig(
        id=uuid.UUID(config["provider_id"]),
        name="limited",
        kind="sendgrid",
        priority=1,
        rate_limit=config["rate"],
        enabled=True,
        settings={"base_url": config["base_url"]},
        secrets={"api_key": config["token"]},
    )
    for n in range(config["count"]):
        email = OutgoingEmail(
            uuid.uuid4(), f"{config['name']}-{n}@example.com", "sender@example.com", "Rate", "<p>hi</p>", "hi"
        )
        await router.send([provider], email)
    await router.close()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
    sys.stdout.flush()
    os._exit(0)
