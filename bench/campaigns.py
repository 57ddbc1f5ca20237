"""A campaign's full send path against the bare adapter, in one run.

    python bench/campaigns.py [--recipients 100000] [--concurrency 100]

Starts, each as its own process: a local SendGrid-speaking fake provider
(it counts one message per personalization), a Temporal dev server (in
memory) and the platform worker (`mp worker`) on a fresh database with N
profiles. This process then measures:

1. bare adapter, one message a request: the SendGrid adapter's `send`
   posting pre-rendered messages to the fake, `--concurrency` at once
   (the first `--single-sample` of the N: its rate is steady, and all of
   100,000 one a request would take minutes);
2. bare adapter, batch interface: its `send_many` (personalizations with
   substitutions) for the same N messages, in batches of the campaign's
   batch size with as many in flight as the campaign's window — the
   interface the full path uses;
3. full path: a campaign to the same N people — `POST /send` through the
   campaigns service, `CampaignSendWorkflow`, the audience snapshot (one
   statement), `send_batch` activities (message rows, render with
   variables, tracking links, unsubscribe headers, router with breaker
   and rate checks in Redis, claims and outcomes with their `Email Sent`
   events recorded a group at a time), from the request to the
   campaign's `finished_at`.

Prints each in emails/hour, the full path's ratio to both, the messages
the fake counted for each, and CPU milliseconds per email
by process (worker, Temporal, fake provider, this process; PostgreSQL is
every `postgres` process on the machine, so run it on a quiet one).
Timings are never asserted; read docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/email.py would shadow the standard library's `email` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import FAST_UVICORN, add_sendgrid, drop_database, fresh_database
from bench.email import FAKE_APP
from bench.flows import Cpu, _logged, _spawn, _until

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
HTML = """<html><body><h1>Hello {{ profile.first_name }}</h1>
<p>{{ data.offer }} until Sunday. {% for i in range(3) %}Item {{ i }}. {% endfor %}</p>
<a href="https://shop.example.com/a">Shop</a> <a href="https://shop.example.com/b">Deals</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>"""


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process now, by pid (backends come and go)."""
    import psutil

    seconds: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] and proc.info["name"].startswith("postgres"):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            seconds[proc.pid] = times.user + times.system
    return seconds


def _pg_ms(before: dict[int, float], after: dict[int, float], units: int) -> float:
    """PostgreSQL CPU milliseconds per unit between two readings: what each
    process still there used since (new ones from zero). A backend that
    ended in between is left out, so this can only undercount."""
    used = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return max(0.0, used) * 1000 / max(units, 1)


async def _bare_batches(adapter, emails: list, size: int, window: int) -> float:
    """Seconds to send every email through `send_many` in batches of
    `size`, `window` batches in flight (as the campaign's workflow does)."""
    batches = [emails[i : i + size] for i in range(0, len(emails), size)]

    async def worker() -> None:
        while batches:
            results = await adapter.send_many(batches.pop())
            failed = [r for r in results if not isinstance(r, str)]
            if failed:
                raise SystemExit(f"the fake refused a batch: {failed[0]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return time.perf_counter() - started


def _rendered(n: int, base: str) -> list:
    """N messages as the full path makes them: the name, signed click and
    unsubscribe links and the open pixel differ per person."""
    from delivery.adapters import OutgoingEmail
    from delivery.links import LinkSigner, apply_tracking, unsubscribe_url
    from delivery.render import render

    signer = LinkSigner("bench")
    out = []
    for i in range(n):
        message_id = uuid.uuid4()
        unsubscribe = unsubscribe_url(signer, base, message_id)
        context = {
            "profile": {"first_name": f"R{i}"},
            "data": {"offer": "20% off"},
            "unsubscribe_url": unsubscribe,
        }
        rendered = render("Hi {{ profile.first_name }}", HTML, None, context, strict=True)
        tracked = apply_tracking(rendered.html, signer, base, message_id)
        out.append(
            OutgoingEmail(
                message_id,
                f"r{i}@example.com",
                "s@example.com",
                rendered.subject,
                tracked.html,
                rendered.text,
                headers={
                    "List-Unsubscribe": f"<{unsubscribe}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            )
        )
    return out


async def _fake_count(url: str) -> int:
    import httpx

    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/stats")).json()["messages"]


async def _bare(adapter, emails: list, concurrency: int) -> float:
    """Seconds to post every email with `concurrency` in flight."""
    queue = list(emails)

    async def worker() -> None:
        while queue:
            await adapter.send(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=100, help="provider calls in flight (both paths)")
    parser.add_argument("--batch-size", type=int, default=None, help="recipients a send_batch handles")
    parser.add_argument("--window", type=int, default=None, help="send_batch activities in flight")
    parser.add_argument(
        "--single-sample",
        type=int,
        default=20_000,
        help="messages the one-a-request baseline sends (its rate is steady; all N take minutes)",
    )
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_SERVER", DEFAULT_SERVER))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()

    from sqlalchemy import text
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from campaigns import service as campaigns
    from campaigns.schemas import CampaignCreate
    from core.settings import Settings
    from db.engine import create_engine, create_sessionmaker, session_scope
    from definitions.campaigns import DEFAULT_BATCH_SIZE, DEFAULT_WINDOW
    from delivery.adapters.sendgrid import SendGridAdapter
    from segments.schemas import SegmentCreate
    from segments.service import create_segment
    from tests.support.processes import temporal_dev_server, wait_for_temporal
    from tests.support.servers import free_port
    from workspaces.service import create_workspace_keys

    n = args.recipients
    url = await fresh_database(args.server, "mp_bench_campaigns")
    tmp = Path(tempfile.mkdtemp(prefix="mp_bench_campaigns_"))
    (tmp / "fake_provider.py").write_text(FAKE_APP)
    fake_port, t_port = free_port(), free_port()
    address = f"127.0.0.1:{t_port}"
    settings = Settings(
        database_url=url,
        redis_url=args.redis,
        redis_prefix=f"mp_bench_{uuid.uuid4().hex[:6]}:",
        temporal_address=address,
        temporal_task_queue=f"bench-campaigns-{uuid.uuid4().hex[:6]}",
        secret_key=uuid.uuid4().hex,
        allow_private_provider_hosts=True,  # the fake provider is local
        campaign_send_concurrency=args.concurrency,
        campaign_batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        campaign_window=args.window or DEFAULT_WINDOW,
    )
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": args.redis,
        "REDIS_PREFIX": settings.redis_prefix,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "SECRET_KEY": settings.secret_key,
        "ALLOW_PRIVATE_PROVIDER_HOSTS": "true",
        "CAMPAIGN_SEND_CONCURRENCY": str(args.concurrency),
        "HOST": "127.0.0.1",
    }
    fake = _spawn(
        [sys.executable, "-m", "uvicorn", "fake_provider:app", "--port", str(fake_port), *FAST_UVICORN],
        {"PYTHONPATH": str(tmp)},
        tmp / "fake.log",
    )
    temporal = temporal_dev_server(tmp, t_port, persist=False)
    temporal.start()
    engine = create_engine(url, pool_size=4)
    worker: subprocess.Popen | None = None
    fake_url = f"http://127.0.0.1:{fake_port}"
    try:
        sessions = create_sessionmaker(engine)
        async with session_scope(sessions) as session:
            ws = (await create_workspace_keys(session, "bench")).workspace_id
            await add_sendgrid(session, ws, settings, fake_url)
            segment = await create_segment(
                session,
                ws,
                SegmentCreate(
                    name="all", definition={"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
                ),
            )
            conn = await session.connection()
            await conn.execute(
                text(
                    "INSERT INTO profiles (id, workspace_id, email, traits) "
                    "SELECT mp_uuid7(), :w, 'r' || i || '@example.com', "
                    "jsonb_build_object('plan', 'pro', 'first_name', 'R' || i) "
                    "FROM generate_series(1, CAST(:n AS integer)) AS i"
                ),
                {"w": ws, "n": n},
            )
            campaign = await campaigns.create_campaign(
                session,
                ws,
                CampaignCreate(
                    name="bench",
                    content={
                        "subject": "Hi {{ profile.first_name }}",
                        "html": HTML,
                        "from_email": "s@example.com",
                    },
                    audience={"segment_ids": [segment.id]},
                    data={"offer": "20% off"},
                ),
                settings,
            )
        await wait_for_temporal(address)
        worker = _spawn([sys.executable, "-m", "cli", "worker"], env, tmp / "worker.log")

        async def ready():
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited; see {tmp / 'worker.log'}")
            return _logged(tmp / "worker.log", "worker polling")

        await _until(ready, 90, "the worker")
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        cpu = Cpu(
            {
                "worker": worker.pid,
                "temporal": temporal.proc.pid,
                "fake provider": fake.pid,
                "bench": os.getpid(),
            }
        )

        # 1. The bare adapter, one message a request: the same number of
        # pre-rendered messages (rendered here, before the clock starts).
        emails = await asyncio.to_thread(_rendered, n, "http://127.0.0.1:3002")
        single = min(n, args.single_sample)
        print(f"bare adapter, one a request: {single:,} messages...", flush=True)
        adapter = SendGridAdapter({"base_url": fake_url}, {"api_key": "k"}, allow_private_hosts=True)
        await adapter.send(emails[0])  # warm the connection
        counted = await _fake_count(fake_url)
        before, pg_before = cpu.read(), _postgres_cpu()
        bare_seconds = await _bare(adapter, emails[:single], args.concurrency)
        bare_cpu, pg_bare = cpu.read(), _postgres_cpu()
        bare_counted = await _fake_count(fake_url) - counted

        # 2. The bare adapter's batch interface, as the campaign uses it.
        print(f"bare adapter, batch interface: {n:,} messages...", flush=True)
        counted = await _fake_count(fake_url)
        batch_before = cpu.read()
        batch_seconds = await _bare_batches(
            adapter, emails, settings.campaign_batch_size, settings.campaign_window
        )
        batch_cpu, pg_batch = cpu.read(), _postgres_cpu()
        batch_counted = await _fake_count(fake_url) - counted
        await adapter.close()
        del emails

        # 3. The campaign.
        print(f"campaign: {n:,} recipients...", flush=True)
        counted = await _fake_count(fake_url)
        campaign_before = cpu.read()
        started = time.perf_counter()
        async with session_scope(sessions) as session:
            await campaigns.schedule(session, ws, campaign.id, None, client, settings)

        async def done():
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text("SELECT status, finished_at, sent, recipients FROM campaigns WHERE id = :c"),
                        {"c": campaign.id},
                    )
                ).one()
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited; see {tmp / 'worker.log'}")
            return row if row[1] is not None else None

        status, _, sent, recipients = await _until(done, 3600, "the campaign", interval=0.2)
        full_seconds = time.perf_counter() - started
        full_cpu, pg_full = cpu.read(), _postgres_cpu()
        full_counted = await _fake_count(fake_url) - counted
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        fake.terminate()
        fake.wait(10)
        temporal.stop()
        await engine.dispose()
        await drop_database(args.server, url)
        shutil.rmtree(tmp, ignore_errors=True)

    bare_rate, full_rate = single / bare_seconds * 3600, sent / full_seconds * 3600
    batch_rate = n / batch_seconds * 3600
    print()
    print(
        f"campaign benchmark — {n:,} recipients, {args.concurrency} provider calls in flight,",
        f"batches of {settings.campaign_batch_size}, window {settings.campaign_window},",
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
    )
    print(f"  campaign: {status}, {sent:,} sent of {recipients:,} recipients in {full_seconds:.1f} s")
    print(
        f"  bare adapter, one a request         {bare_rate:>12,.0f} emails/hour ({bare_seconds:.1f} s, "
        f"{bare_counted:,} at the fake, a sample of {single:,})"
    )
    print(
        f"  bare adapter, batch interface       {batch_rate:>12,.0f} emails/hour ({batch_seconds:.1f} s, "
        f"{batch_counted:,} at the fake)"
    )
    print(
        f"  full campaign path                  {full_rate:>12,.0f} emails/hour ({full_seconds:.1f} s, "
        f"{full_counted:,} at the fake)"
    )
    print(
        f"  full path / bare batch interface: {full_rate / batch_rate:.2f};",
        f"/ bare one a request: {full_rate / bare_rate:.2f}",
        "(target: >= 2,000,000 emails/hour; moonshot 5,000,000)",
    )
    print(
        f"  CPU ms per email, bare one a request: {Cpu.per_unit(before, bare_cpu, single)}, "
        f"postgres (machine-wide) {_pg_ms(pg_before, pg_bare, single):.2f}"
    )
    print(
        f"  CPU ms per email, bare batch:         {Cpu.per_unit(batch_before, batch_cpu, n)}, "
        f"postgres (machine-wide) {_pg_ms(pg_bare, pg_batch, n):.2f}"
    )
    print(
        f"  CPU ms per email, full path:          {Cpu.per_unit(campaign_before, full_cpu, max(sent, 1))}, "
        f"postgres (machine-wide) {_pg_ms(pg_batch, pg_full, sent):.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
