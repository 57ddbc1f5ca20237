"""`mp seed`: a demo workspace with profiles and events, written through
the tracking writer (the same path as the tracking API)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from core.clients import create_redis
from core.settings import Settings
from db.engine import (
    INGEST_SERVER_SETTINGS,
    create_asyncpg_pool,
    create_engine,
    create_sessionmaker,
    session_scope,
)
from tracking.items import to_item
from tracking.schemas import IdentifyCall, TrackCall
from tracking.writer import GroupCommitWriter
from workspaces.service import WorkspaceKeys, create_workspace_keys

FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
PLANS = ["free", "free", "free", "starter", "pro", "enterprise"]
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "JP", "NG"]
EVENTS = [
    ("Page Viewed", 40),
    ("Product Viewed", 25),
    ("Added to Cart", 12),
    ("Checkout Started", 8),
    ("Order Completed", 5),
    ("Searched", 10),
]
BATCH = 500


def _event(rng: random.Random, now: datetime, days: int) -> tuple[str, dict, datetime]:
    name = rng.choices([e for e, _ in EVENTS], weights=[w for _, w in EVENTS])[0]
    props: dict = {}
    if name in ("Product Viewed", "Added to Cart"):
        props = {"product_id": f"sku_{rng.randint(1, 200)}", "price": round(rng.uniform(5, 300), 2)}
    elif name == "Order Completed":
        props = {"order_id": f"o_{rng.randint(1, 10**9)}", "revenue": round(rng.uniform(20, 900), 2)}
    elif name == "Page Viewed":
        props = {"path": rng.choice(["/", "/pricing", "/blog", "/docs", "/signup"])}
    return name, props, now - timedelta(seconds=rng.randint(0, days * 86400))


async def run_seed(
    settings: Settings, workspace: str, profiles: int, per_profile: int, days: int
) -> WorkspaceKeys:
    """Create the workspace's keys and fill it; returns the keys."""
    rng = random.Random(42)
    engine = create_engine(settings.database_url, pool_size=1)
    async with session_scope(create_sessionmaker(engine)) as session:
        keys = await create_workspace_keys(session, workspace)
    await engine.dispose()

    pool = await create_asyncpg_pool(
        settings.database_url,
        size=4,  # a one-off loader: a few connections, not the tracking pool
        min_size=settings.db_pool_min_size,
        command_timeout=settings.db_command_timeout_seconds,
        server_settings=INGEST_SERVER_SETTINGS,
    )
    redis = create_redis(settings)
    writer = GroupCommitWriter(pool, redis, redis_prefix=settings.redis_prefix)
    now = datetime.now(UTC)
    total = profiles * (1 + per_profile)
    pending = []
    columns = (TextColumn("seeding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns) as progress:
            task = progress.add_task("seed", total=total)
            for n in range(profiles):
                user = f"demo_user_{n}"
                traits = {
                    "first_name": rng.choice(FIRST_NAMES),
                    "plan": rng.choice(PLANS),
                    "country": rng.choice(COUNTRIES),
                    "email": f"demo{n}@example.com",
                    "signed_up_at": (now - timedelta(days=rng.randint(0, days))).isoformat(),
                }
                pending.append(to_item(IdentifyCall(userId=user, traits=traits), keys.workspace_id, now))
                for _ in range(per_profile):
                    name, props, at = _event(rng, now, days)
                    call = TrackCall(userId=user, event=name, properties=props, timestamp=at)
                    pending.append(to_item(call, keys.workspace_id, now))
                if len(pending) >= BATCH or n == profiles - 1:
                    await writer.write(pending)
                    progress.advance(task, len(pending))
                    pending = []
    finally:
        await writer.close()
        await pool.close()
        await redis.aclose()
    return keys
