"""Every dashboard page and analytics endpoint against a large workspace.

    python bench/dashboard.py [--scale 1.0]    # 1M profiles, 10M events over 3 months (slow to generate)
    python bench/dashboard.py --scale 0.01     # 10k / 100k, a quick run

Generates the dataset with the segments bench's generator (bench/segments.py)
inside PostgreSQL, adds a segment (refreshed), a template, a provider, a
flow and a campaign through the services (the campaign then made a
finished send to a tenth of the profiles by writing its snapshot and
messages), then runs the analytics rollup once (the
backfill a first scheduled run does) and once more after 10,000 new events
(what each scheduled run does). Then it serves the dashboard (web) and the
management API in this process and requests each page and endpoint
`--repeat` times, one at a time, and prints the server time (the app's own
`Server-Timing`) p50 / p95 per page, beside `/health` of the same app as
the framework's floor. Target: p95 < 300 ms per page.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/email.py would shadow the standard library's `email` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import os
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.rollups import rollup_pass
from bench.common import drop_database, fresh_database
from bench.segments import DEFAULT_SERVER, generate
from campaigns import service as campaigns
from campaigns.schemas import CampaignCreate
from core.secret_box import SecretBox
from core.settings import Settings, to_asyncpg_dsn
from db.engine import create_engine, create_sessionmaker, session_scope
from db.migrate import upgrade
from delivery import service as delivery
from delivery.schemas import ProviderCreate, TemplateCreate
from flows import service as flows
from flows.schemas import FlowCreate
from segments import service as segments
from segments.schemas import SegmentCreate
from tests.support.servers import serve
from workspaces.service import create_workspace_keys

TARGET_MS = 300.0


def _server_ms(response: httpx.Response) -> float:
    match = re.search(r"dur=([0-9.]+)", response.headers.get("server-timing", ""))
    return float(match.group(1)) if match else float("nan")


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _fixtures(sessionmaker, ws: uuid.UUID, settings: Settings) -> dict[str, str]:
    """A refreshed segment, a template, a provider and a draft flow."""
    async with session_scope(sessionmaker) as session:
        segment = await segments.create_segment(
            session,
            ws,
            SegmentCreate(
                name="Pro", definition={"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
            ),
        )
        template = await delivery.create_template(
            session,
            ws,
            TemplateCreate(
                name="Hello", subject="Hi {{ profile.plan }}", html="<p>Hi</p>", from_email="a@example.com"
            ),
        )
        await delivery.create_provider(
            session,
            ws,
            ProviderCreate(name="smtp", kind="smtp", priority=10, settings={"host": "mail.example.com"}),
            settings.tracking_url,
            box=SecretBox.from_settings(settings),
        )
        flow = await flows.create_flow(
            session,
            ws,
            FlowCreate(
                name="Welcome",
                definition={
                    "trigger": {"type": "event", "name": "Signed Up"},
                    "start": "hello",
                    "nodes": [{"id": "hello", "type": "send_email", "template_id": str(template.id)}],
                },
            ),
        )
    started = time.perf_counter()
    async with sessionmaker() as session, session.begin():
        await segments.refresh(await session.connection(), ws, segment.id)
    print(f"segment refresh: {time.perf_counter() - started:.1f}s", flush=True)
    async with session_scope(sessionmaker) as session:
        campaign = await campaigns.create_campaign(
            session,
            ws,
            CampaignCreate(
                name="Spring sale",
                content={"template_id": template.id},
                audience={"segment_ids": [segment.id]},
            ),
            settings,
        )
    return {
        "segment": str(segment.id),
        "template": str(template.id),
        "flow": str(flow.id),
        "campaign": str(campaign.id),
    }


async def _sent_campaign(conn: asyncpg.Connection, ws: uuid.UUID, campaign_id: str, n: int) -> None:
    """Make the campaign a finished send to `n` people (its snapshot and
    message rows written directly; a third opened, a tenth clicked): what
    its page and the campaigns list read."""
    await conn.execute(
        """
        INSERT INTO campaign_recipients (campaign_id, seq, workspace_id, profile_id, email, message_id)
        SELECT $1::uuid, row_number() OVER (ORDER BY id), $2::uuid, id, email, gen_random_uuid()
        FROM (SELECT id, email FROM profiles WHERE workspace_id = $2::uuid AND email IS NOT NULL LIMIT $3) p
        """,
        campaign_id,
        ws,
        n,
    )
    await conn.execute(
        """
        INSERT INTO messages (id, workspace_id, idempotency_key, profile_id, email, campaign_id, status,
                              provider_kind, sent_at, delivered_at, opened_at, clicked_at, marketing,
                              recipient_campaign_id)
        SELECT message_id, workspace_id, 'campaign:' || campaign_id || ':' || profile_id, profile_id, email,
               campaign_id::text, 'delivered', 'smtp', now() - interval '2 hours', now() - interval '2 hours',
               CASE WHEN seq % 3 = 0 THEN now() - interval '1 hour' END,
               CASE WHEN seq % 10 = 0 THEN now() - interval '1 hour' END, true, campaign_id
        FROM campaign_recipients WHERE campaign_id = $1::uuid
        """,
        campaign_id,
    )
    await conn.execute(
        "UPDATE campaigns SET status = 'sent', started_at = now() - interval '2 hours', finished_at = now(), "
        "recipients = $2, sent = $2 WHERE id = $1::uuid",
        campaign_id,
        n,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1M profiles and 10M events")
    parser.add_argument("--days", type=int, default=90, help="events spread over this many past days")
    parser.add_argument("--repeat", type=int, default=20, help="requests per page (p50 / p95 of these)")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_SERVER", DEFAULT_SERVER))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--cache-dataset",
        action="store_true",
        help="keep the generated profiles and events as a template database and copy it on the next run "
        "with the same scale and days (skips the twelve-minute generation; drop it with --drop-cache)",
    )
    parser.add_argument("--drop-cache", action="store_true", help="drop the cached dataset and exit")
    args = parser.parse_args()
    n_profiles, n_events = int(1_000_000 * args.scale), int(10_000_000 * args.scale)

    cache = f"mp_bench_dashboard_cache_{n_profiles}_{n_events}_{args.days}"
    if args.drop_cache:
        await drop_database(args.server, args.server.rsplit("/", 1)[0] + f"/{cache}")
        return
    if args.cache_dataset:
        url = await _from_cache(args.server, cache, n_profiles, n_events, args.days)
    else:
        url = await fresh_database(args.server, "mp_bench_dashboard")
    settings = Settings(
        database_url=url,
        redis_url=args.redis,
        redis_prefix=f"mp_bench_{uuid.uuid4().hex[:8]}:",
        secret_key="bench-" + uuid.uuid4().hex,
        temporal_ui_url="http://localhost:8233",
    )
    engine = create_engine(url, pool_size=4)
    sessionmaker = create_sessionmaker(engine)
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        async with session_scope(sessionmaker) as session:
            keys = await create_workspace_keys(session, "bench")
        ws = keys.workspace_id
        if not args.cache_dataset:
            await _generate(conn, ws, n_profiles, n_events, args.days)
        ids = await _fixtures(sessionmaker, ws, settings)
        started = time.perf_counter()
        await _sent_campaign(conn, ws, ids["campaign"], max(1, n_profiles // 10))
        print(
            f"campaign of {max(1, n_profiles // 10):,} recipients: {time.perf_counter() - started:.1f}s",
            flush=True,
        )

        started = time.perf_counter()
        first = await rollup_pass(engine, lag_seconds=0, slice_hours=24 * 31)
        backfill = time.perf_counter() - started
        print(f"rollup backfill: {first.events:,} events in {backfill:.1f}s", flush=True)
        await conn.execute(
            """
            INSERT INTO events (id, workspace_id, profile_id, type, name, properties, occurred_at,
                                received_at, message_id)
            SELECT gen_random_uuid(), $1::uuid, md5($1::uuid::text || '-' || (1 + g % $2))::uuid, 'track',
                   'Page Viewed', jsonb_build_object('path', '/p/' || g % 50), now(), now(), 'inc-' || g
            FROM generate_series(1, 10000) g
            """,
            ws,
            max(1, n_profiles),
        )
        started = time.perf_counter()
        step = await rollup_pass(engine, lag_seconds=0, slice_hours=6)
        incremental = time.perf_counter() - started
        print(f"rollup incremental: {step.events:,} new events in {incremental * 1000:.0f} ms", flush=True)
        profile_id = await conn.fetchval(f"SELECT md5('{ws}' || '-' || 42)::uuid")

        from api.app import create_app as create_api
        from web.app import ServerTiming
        from web.app import create_app as create_web

        web_app, api_app = create_web(settings), create_api(settings)
        api_app.add_middleware(ServerTiming)  # the dashboard has it; the API gets it for this run
        async with serve(web_app) as web_url, serve(api_app) as api_url:
            async with httpx.AsyncClient(base_url=web_url, timeout=120) as web:
                form = await web.get("/login")
                token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
                signed = await web.post("/login", data={"key": keys.secret_key, "csrf": token})
                assert signed.status_code == 303, signed.text
                csrf = re.search(r'name="csrf" value="([^"]+)"', (await web.get("/segments/new")).text).group(
                    1
                )
                funnel = "steps=Product+Viewed%0AAdded+to+Cart%0AOrder+Completed&window_hours=24"
                pages = {
                    "health (floor)": ("GET", "/health", None),
                    "overview 7d": ("GET", "/", None),
                    "overview 30d": ("GET", "/?range=30d", None),
                    "overview 90d": ("GET", "/?range=90d", None),
                    "profiles": ("GET", "/profiles", None),
                    "profiles search email": ("GET", "/profiles?q=user42%40example.com", None),
                    "profiles search trait": ("GET", "/profiles?q=plan%3Dpro", None),
                    "profile page": ("GET", f"/profiles/{profile_id}", None),
                    "segments": ("GET", "/segments", None),
                    "segment page": ("GET", f"/segments/{ids['segment']}", None),
                    "segment estimate (trait)": (
                        "POST",
                        "/segments/estimate",
                        {
                            "definition": '{"type": "trait", "path": "plan", "op": "eq", "value": "pro"}',
                            "csrf": csrf,
                        },
                    ),
                    "campaigns": ("GET", "/campaigns", None),
                    "campaign page": ("GET", f"/campaigns/{ids['campaign']}", None),
                    "flows": ("GET", "/flows", None),
                    "flow page": ("GET", f"/flows/{ids['flow']}", None),
                    "templates": ("GET", "/templates", None),
                    "template page": ("GET", f"/templates/{ids['template']}", None),
                    "providers": ("GET", "/providers", None),
                    "events 30d": ("GET", "/events", None),
                    "events breakdown 30d": (
                        "GET",
                        "/events?name=Page+Viewed&breakdown=path&range=30d",
                        None,
                    ),
                    "events funnel 30d": ("GET", f"/events?range=30d&{funnel}", None),
                }
                results = [await _measure(web, label, *spec, args.repeat) for label, spec in pages.items()]
            headers = {"Authorization": f"Bearer {keys.secret_key}"}
            steps = "steps=Product+Viewed&steps=Added+to+Cart&steps=Order+Completed"
            async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=120) as api:
                endpoints = {
                    "api health (floor)": "/health",
                    "analytics events day 30d": "/api/v1/analytics/events?interval=day",
                    "analytics events hour 7d": "/api/v1/analytics/events?interval=hour&name=Page+Viewed"
                    f"&from={_ago(7)}",
                    "analytics breakdown 90d": "/api/v1/analytics/events?name=Page+Viewed&breakdown=path"
                    f"&from={_ago(90)}",
                    "analytics email 30d": "/api/v1/analytics/email",
                    "analytics email campaign 7d": "/api/v1/analytics/email?interval=hour&campaign_id="
                    + ids["campaign"]
                    + "&from="
                    + (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:00:00Z"),
                    "analytics profiles 30d": "/api/v1/analytics/profiles",
                    "analytics overview 30d": "/api/v1/analytics/overview",
                    "analytics funnel 30d": f"/api/v1/analytics/funnel?{steps}&window_hours=24",
                    "analytics funnel 7d": f"/api/v1/analytics/funnel?{steps}&window_hours=24&from={_ago(7)}",
                    "analytics funnel 90d 5 steps": f"/api/v1/analytics/funnel?{steps}"
                    "&steps=Email+Opened&steps=Email+Clicked&window_hours=24"
                    f"&from={_ago(90)}",
                    "analytics funnel 90d 7d window": "/api/v1/analytics/funnel?steps=Product+Viewed"
                    f"&steps=Added+to+Cart&window_hours=168&from={_ago(90)}",
                }
                results += [
                    await _measure(api, label, "GET", path, None, args.repeat)
                    for label, path in endpoints.items()
                ]
        print(f"\n{n_profiles:,} profiles, {n_events:,} events; {args.repeat} requests each, one at a time")
        print(f"rollup: backfill {backfill:.1f}s, then {incremental * 1000:.0f} ms for 10,000 new events")
        target = f"target < {TARGET_MS:.0f} ms p95"
        print(f"{'page / endpoint':<30}{'p50 ms':>10}{'p95 ms':>10}{'x floor':>9}  {target}")
        floor = results[0][2]
        for label, p50, p95 in results:
            if "floor" in label:
                floor = p95
            mark = "ok" if p95 < TARGET_MS else ("REFUSED" if p95 != p95 else "SLOW")
            print(f"{label:<30}{p50:>10.1f}{p95:>10.1f}{p95 / floor if floor else 0:>9.1f}  {mark}")
    finally:
        await conn.close()
        await engine.dispose()
        if args.keep:
            print(f"kept {url}")
        else:
            await drop_database(args.server, url)


async def _generate(conn: asyncpg.Connection, ws: uuid.UUID, profiles: int, events: int, days: int) -> None:
    print(f"generating {profiles:,} profiles and {events:,} events over {days} days...", flush=True)
    started = time.perf_counter()
    await generate(conn, ws, profiles, events, days)
    print(f"generated in {time.perf_counter() - started:.0f}s", flush=True)


async def _from_cache(server: str, cache: str, profiles: int, events: int, days: int) -> str:
    """A copy of the cached dataset `cache` (generated first when missing),
    migrated to the current head. The copy's workspace is the cache's
    "bench" workspace; the run adds its own keys to it. Events keep the
    times of the generation (a cache hours old has its newest hours empty)."""
    base = server.rsplit("/", 1)[0]
    admin = await asyncpg.connect(server)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", cache)
    finally:
        await admin.close()
    if not exists:
        tmp = await fresh_database(server, cache + "_new")
        engine = create_engine(tmp, pool_size=1)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                ws = (await create_workspace_keys(session, "bench")).workspace_id
            conn = await asyncpg.connect(to_asyncpg_dsn(tmp))
            try:
                await _generate(conn, ws, profiles, events, days)
            finally:
                await conn.close()
        finally:
            await engine.dispose()
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'ALTER DATABASE "{tmp.rsplit("/", 1)[1]}" RENAME TO "{cache}"')
        finally:
            await admin.close()
    name = f"mp_bench_dashboard_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    started = time.perf_counter()
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{cache}"')
    finally:
        await admin.close()
    url = f"{base}/{name}"
    await asyncio.to_thread(upgrade, url)
    print(f"copied the cached dataset {cache} in {time.perf_counter() - started:.0f}s", flush=True)
    return url


def _ago(days: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _measure(
    client: httpx.AsyncClient, label: str, method: str, path: str, data: dict | None, repeat: int
) -> tuple[str, float, float]:
    """(label, p50, p95) of the server time; printed as soon as measured. A
    refusal (a funnel past its time limit) is reported, not timed."""
    times = []
    for _ in range(repeat + 1):  # the first warms caches and is not counted
        response = await client.request(method, path, data=data)
        if response.status_code != 200:
            print(f"{label}: answered {response.status_code}: {response.text[:200]}", flush=True)
            return label, float("nan"), float("nan")
        times.append(_server_ms(response))
    times = times[1:]
    p50, p95 = statistics.median(times), _p(times, 0.95)
    print(f"  {label:<30}{p50:>10.1f}{p95:>10.1f}", flush=True)
    return label, p50, p95


if __name__ == "__main__":
    asyncio.run(main())
