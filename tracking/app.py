"""The tracking app (:3002): public-key ingestion, kept lean for throughput."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clients import create_redis
from core.http import JSONResponse, install_error_handlers
from core.runtime import tune_gc
from core.settings import Settings, get_settings
from db.engine import INGEST_SERVER_SETTINGS, create_asyncpg_pool, create_engine
from delivery.engagement import LinkEvents
from delivery.links import LinkSigner
from delivery.preferences import PreferenceCenter
from delivery.webhooks import SNSVerifier, WebhookHandler
from tracking.email_endpoints import router as email_router
from tracking.endpoints import router
from tracking.fastpath import TrackingFastPath
from tracking.sdk_asset import router as sdk_router
from tracking.writer import GroupCommitWriter
from workspaces.auth_limiter import AuthFailureLimiter
from workspaces.service import KeyAuthenticator


@dataclass
class TrackingServices:
    """Clients built once at start-up and shared by every request."""

    engine: AsyncEngine
    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: KeyAuthenticator
    writer: GroupCommitWriter
    links: LinkEvents
    preferences: PreferenceCenter
    webhooks: WebhookHandler
    http: httpx.AsyncClient


def create_app(settings: Settings | None = None) -> TrackingFastPath:
    """Build the tracking app (FastAPI behind the ingestion fast path);
    clients are created in its lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, pool_size=settings.tracking_engine_pool_size)
        pool = await create_asyncpg_pool(
            settings.database_url,
            size=settings.tracking_db_pool_size,
            min_size=settings.db_pool_min_size,
            command_timeout=settings.db_command_timeout_seconds,
            server_settings=INGEST_SERVER_SETTINGS,
        )
        redis = create_redis(settings)
        writer = GroupCommitWriter(
            pool,
            redis,
            redis_prefix=settings.redis_prefix,
            max_events=settings.tracking_commit_max_events,
            concurrency=settings.tracking_commit_concurrency,
            spill_events=settings.tracking_commit_spill_events,
        )
        http = httpx.AsyncClient(timeout=settings.tracking_http_timeout_seconds)
        app.state.services = TrackingServices(
            engine,
            pool,
            redis,
            KeyAuthenticator(
                engine,
                ttl=settings.key_cache_seconds,
                limiter=AuthFailureLimiter(
                    redis,
                    settings.redis_prefix,
                    settings.auth_failures_per_second,
                    settings.auth_failure_burst,
                ),
            ),
            writer,
            LinkEvents(engine, LinkSigner(settings.secret_key)),
            PreferenceCenter(engine, LinkSigner(settings.secret_key)),
            WebhookHandler(
                engine,
                http,
                SNSVerifier(http, settings.sns_cert_url_pattern),
                max_age=settings.webhook_max_age_seconds,
            ),
            http,
        )
        tune_gc(settings.gc_thresholds)
        try:
            yield
        finally:
            await writer.close()
            await http.aclose()
            await pool.close()
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Marketing Platform — tracking API",
        description="Public-key ingestion: identify, track, batch, page, alias.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(email_router)
    app.include_router(sdk_router)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, object]:
        writer = app.state.services.writer
        return {
            "status": "ok",
            "groups_committed": writer.groups_committed,
            "events_committed": writer.events_committed,
            "requests_committed": writer.requests_committed,
            "commit_seconds": round(writer.commit_seconds, 3),
        }

    return TrackingFastPath(app)
