"""Email sending throughput: the full send path against the bare adapter.

    python bench/email.py [--messages 2000] [--concurrency 32]

Starts a local SendGrid-speaking fake (its own process), then from this
process measures, on the same machine and in the same run:

- direct: the SendGrid adapter alone posting pre-rendered messages;
- full path: `EmailSender.send` for stored messages — row lock,
  suppression check, rendering, tracking links, router (breaker and
  token checks in Redis), the same adapter, and recording the result and
  the `Email Sent` event in PostgreSQL;
- failover: the same with a primary provider that refuses connections,
  so every message fails over (its breaker opens after a few failures).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is called email.py, like the standard library's MIME package:
# keep its own folder off the import path before anything imports `email`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import FAST_UVICORN, add_sendgrid, drop_database, fresh_database
from core.runtime import tune_gc
from core.settings import Settings
from db.engine import create_engine, create_sessionmaker, session_scope
from delivery import service
from delivery.adapters import OutgoingEmail
from delivery.adapters.sendgrid import SendGridAdapter
from delivery.limits import BreakerPolicy, ProviderLimits
from delivery.router import ProviderRouter
from delivery.schemas import MessageCreate, TemplateCreate
from delivery.sender import EmailSender
from tests.support.servers import free_port
from workspaces.service import create_workspace_keys

FAKE_APP = """
import uuid
import orjson
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Messages answered 202: one per personalization (a batch request carries many).
counts = {"requests": 0, "messages": 0}

async def send(request):
    body = orjson.loads(await request.body())
    counts["requests"] += 1
    counts["messages"] += len(body.get("personalizations") or ())
    return Response(status_code=202, headers={"X-Message-Id": uuid.uuid4().hex[:22]})

async def stats(request):
    return JSONResponse(counts)

app = Starlette(routes=[Route("/v3/mail/send", send, methods=["POST"]), Route("/stats", stats)])
"""

HTML = """<html><body><h1>Hello {{ profile.first_name }}</h1>
<p>Your code is {{ data.code }}. {% for i in range(3) %}Item {{ i }}. {% endfor %}</p>
<a href="https://shop.example.com/a">Shop</a> <a href="https://shop.example.com/b">Deals</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>"""


async def _run(concurrency: int, items: list, send) -> float:
    """Messages per second sending `items` with `concurrency` workers."""
    queue = list(items)

    async def worker() -> None:
        while queue:
            await send(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(items) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--server",
        default=os.environ.get("BENCH_DATABASE_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()

    url = await fresh_database(args.server, "mp_bench_email")
    name = url.rsplit("/", 1)[1]

    port = free_port()
    fake_dir = Path(tempfile.mkdtemp(prefix=f"{name}_"))
    await asyncio.to_thread((fake_dir / "fake_provider.py").write_text, FAKE_APP)
    fake = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "fake_provider:app",
        "--port",
        str(port),
        *FAST_UVICORN,
        cwd=fake_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(
        database_url=url, redis_url=args.redis, redis_prefix=f"mp_bench_{uuid.uuid4().hex[:6]}:"
    )
    engine = create_engine(url, pool_size=args.concurrency + 4)
    redis = aioredis.from_url(args.redis)
    fake_url = f"http://127.0.0.1:{port}"
    tune_gc(settings.gc_thresholds)  # as the worker process does, for both paths
    try:
        await asyncio.sleep(1.5)
        sessions = create_sessionmaker(engine)
        async with session_scope(sessions) as session:
            keys = await create_workspace_keys(session, "bench")
            ws = keys.workspace_id
            template = await service.create_template(
                session,
                ws,
                TemplateCreate(
                    name="bench", subject="Hi {{ profile.first_name }}", html=HTML, from_email="s@example.com"
                ),
            )
            await add_sendgrid(session, ws, settings, fake_url)

        async def make_messages(count: int, tag: str) -> list[uuid.UUID]:
            ids = []
            async with session_scope(sessions) as session:
                for n in range(count):
                    row, _ = await service.create_message(
                        session,
                        ws,
                        MessageCreate(
                            template_id=template.id, email=f"{tag}{n}@example.com", data={"code": n}
                        ),
                    )
                    ids.append(row["id"])
            return ids

        print(f"preparing {args.messages:,} messages per phase...", flush=True)
        direct_adapter = SendGridAdapter({"base_url": fake_url}, {"api_key": "k"}, allow_private_hosts=True)
        emails = [
            OutgoingEmail(uuid.uuid4(), f"d{n}@example.com", "s@example.com", "Hi", HTML, "Hi")
            for n in range(args.messages)
        ]
        full_ids = await make_messages(args.messages, "full")
        limits = ProviderLimits(
            redis, settings.redis_prefix, BreakerPolicy(failure_threshold=5, cooldown_seconds=3600)
        )
        router = ProviderRouter(limits, allow_private_hosts=True)  # the fake provider is local
        sender = EmailSender(engine, router, settings)

        await direct_adapter.send(emails[0])  # warm connections

        async def full_send(message_id: uuid.UUID) -> None:
            result = await sender.send(ws, message_id)
            assert result.status == "sent", result

        # A warm-up (pools, caches, compiled templates).
        warm = await make_messages(min(500, args.messages), "warm")
        await _run(args.concurrency, warm, full_send)
        # Alternate the two measured paths, each twice; keep each one's best pass.
        half = len(full_ids) // 2
        direct_passes, full_passes = [], []
        for n in range(2):
            direct_passes.append(
                await _run(args.concurrency, emails[n * half : (n + 1) * half], direct_adapter.send)
            )
            full_passes.append(await _run(args.concurrency, full_ids[n * half : (n + 1) * half], full_send))
        direct, full = max(direct_passes), max(full_passes)

        async with session_scope(sessions) as session:
            await add_sendgrid(session, ws, settings, f"http://127.0.0.1:{free_port()}", "down", 1)
        failover_ids = await make_messages(args.messages, "failover")
        failover = await _run(args.concurrency, failover_ids, full_send)
        await router.close()
        await direct_adapter.close()
    finally:
        fake.terminate()
        await asyncio.wait_for(fake.wait(), 10)
        await asyncio.to_thread(shutil.rmtree, fake_dir, True)
        await engine.dispose()
        stale = [key async for key in redis.scan_iter(f"{settings.redis_prefix}*")]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()
        await drop_database(args.server, url)

    print()
    print(
        f"email benchmark — {args.messages:,} messages a phase, {args.concurrency} concurrent sends, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  direct adapter (pre-rendered POSTs)      {direct:>8,.0f} messages/s")
    print(f"  full send path (render, route, record)   {full:>8,.0f} messages/s")
    print(f"  full path, primary down (failover)       {failover:>8,.0f} messages/s")
    print(
        f"  passes (alternated): direct {', '.join(f'{d:,.0f}' for d in direct_passes)}; "
        f"full {', '.join(f'{f:,.0f}' for f in full_passes)} messages/s"
    )
    print(
        f"  cost of the full path: {direct / full:.2f}x the direct adapter's time a message (target <= 1.5x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
