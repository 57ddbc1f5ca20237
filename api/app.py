"""The management API app (:3001)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api import analytics, campaigns, email, flows, profiles, segments, topics, workspace
from core.clients import create_redis
from core.http import JSONResponse, install_error_handlers
from core.request_limits import RequestLimits
from core.runtime import tune_gc
from core.settings import Settings, get_settings
from core.temporal import TemporalConnection
from db.engine import create_engine, create_sessionmaker
from definitions.limits import API_BODY_BYTES
from workspaces.auth_limiter import AuthFailureLimiter
from workspaces.service import KeyAuthenticator


@dataclass
class ApiServices:
    """Clients built once at start-up."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    keys: KeyAuthenticator
    temporal: TemporalConnection


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the management API; clients are created in its lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, pool_size=settings.api_db_pool_size)
        # Only the limit on failed key lookups uses Redis here (and does without it).
        redis = create_redis(settings)
        limiter = AuthFailureLimiter(
            redis, settings.redis_prefix, settings.auth_failures_per_second, settings.auth_failure_burst
        )
        app.state.services = ApiServices(
            settings,
            engine,
            create_sessionmaker(engine),
            KeyAuthenticator(engine, ttl=settings.key_cache_seconds, limiter=limiter),
            TemporalConnection(settings),
        )
        tune_gc(settings.gc_thresholds)  # analytics pages allocate many short-lived objects
        try:
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Marketing Platform — management API",
        description=(
            "Secret-key API (`Authorization: Bearer sk_...`) for profiles, segments, email, "
            "campaigns and flows."
        ),
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
    # Body size, URL and JSON hygiene before any route (core/request_limits.py).
    app.add_middleware(RequestLimits, default_limit=API_BODY_BYTES, json_prefixes=("/api/",))
    app.include_router(profiles.router)
    app.include_router(segments.router)
    app.include_router(flows.router)
    app.include_router(campaigns.router)
    app.include_router(topics.router)
    app.include_router(workspace.router)
    app.include_router(analytics.router)
    for router in (
        email.templates_router,
        email.providers_router,
        email.suppressions_router,
        email.messages_router,
    ):
        app.include_router(router)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
