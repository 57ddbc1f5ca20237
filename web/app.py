"""The dashboard app (:3000). Pages render Jinja2 templates with data from
the domain services (profiles, segments, campaigns, flows, delivery,
analytics); no SQL here. Errors are pages too: a bad query parameter is a 400 page, a
missing row a 404 page, an outage a 503 page with Retry-After."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.clients import create_redis
from core.errors import OUTAGE_TYPES, AppError, as_outage
from core.request_limits import RequestLimits
from core.runtime import tune_gc
from core.settings import Settings, get_settings
from core.temporal import TemporalConnection
from db.engine import create_engine, create_sessionmaker
from delivery.limits import BreakerPolicy, ProviderLimits
from web import charts
from web.deps import CsrfRejected, NotSignedIn
from web.session import SessionSigner
from workspaces.auth_limiter import AuthFailureLimiter
from workspaces.service import KeyAuthenticator

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
FORM_BODY_BYTES = 512 * 1024


@dataclass
class WebServices:
    """Clients built once at start-up."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    keys: KeyAuthenticator
    signer: SessionSigner
    limits: ProviderLimits
    temporal: TemporalConnection


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.globals["charts"] = charts
    env.filters["compact"] = charts.compact
    env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, int | float) else v
    env.filters["pct"] = lambda v: f"{v * 100:.1f}%"
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M UTC") if v else "—"
    env.filters["short"] = lambda v: v.strftime("%b %-d, %H:%M") if v else "—"
    return templates


def render(request: Request, template: str, /, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page (or an htmx fragment) from `web/templates`."""
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the dashboard; clients are created in its lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, pool_size=settings.api_db_pool_size)
        redis = create_redis(settings)
        limiter = AuthFailureLimiter(
            redis, settings.redis_prefix, settings.auth_failures_per_second, settings.auth_failure_burst
        )
        policy = BreakerPolicy(
            failure_threshold=settings.breaker_failure_threshold,
            window_seconds=settings.breaker_window_seconds,
            cooldown_seconds=settings.breaker_cooldown_seconds,
        )
        app.state.services = WebServices(
            settings,
            engine,
            create_sessionmaker(engine),
            KeyAuthenticator(engine, ttl=settings.key_cache_seconds, limiter=limiter),
            SessionSigner(settings.secret_key),
            ProviderLimits(redis, settings.redis_prefix, policy),
            TemporalConnection(settings),
        )
        tune_gc(settings.gc_thresholds)  # analytics pages allocate many short-lived objects
        try:
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Marketing Platform — dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.templates = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_pages(app)
    app.add_middleware(RequestLimits, default_limit=FORM_BODY_BYTES, json_prefixes=())
    app.add_middleware(ServerTiming)

    from web.pages import (
        auth,
        campaigns,
        events,
        flows,
        overview,
        profiles,
        providers,
        segments,
        templates,
    )

    for module in (auth, overview, profiles, segments, campaigns, flows, templates, providers, events):
        app.include_router(module.router)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class ServerTiming:
    """Adds `Server-Timing: app;dur=<ms>` to every response: the time the
    app spent before its first byte (bench/dashboard.py reports it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - started) * 1000
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, timed_send)


def _error_page(
    request: Request, status: int, title: str, detail: Any, headers: dict | None = None
) -> Response:
    response = render(request, "error.html", status_code=status, title=title, detail=detail)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(NotSignedIn)
    async def _sign_in(request: Request, exc: NotSignedIn) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        target = request.url.path
        return RedirectResponse(f"/login?next={target}" if target != "/" else "/login", status_code=303)

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: CsrfRejected) -> Response:
        return _error_page(
            request,
            403,
            "This form has expired",
            "Reload the page and submit it again (security check failed).",
        )

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        titles = {
            404: "Not found",
            401: "Please sign in",
            403: "Not allowed",
            409: "Conflict",
            429: "Slow down",
        }
        title = titles.get(exc.status_code, "Something is not right with this request")
        return _error_page(request, exc.status_code, title, exc.detail, exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> Response:
        detail = [
            f"{'.'.join(str(p) for p in err['loc'] if p not in ('query', 'path'))}: {err['msg']}"
            for err in exc.errors()
        ]
        return _error_page(request, 400, "Some parameters of this address are not valid", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = "Page not found" if exc.status_code == 404 else "Request not accepted"
        return _error_page(request, exc.status_code, title, exc.detail, exc.headers)

    async def _unexpected(request: Request, exc: Exception) -> Response:
        outage = as_outage(exc)
        if outage is not None:
            return _error_page(
                request,
                503,
                "A service is unavailable",
                f"{outage.detail} Try again shortly.",
                outage.headers(),
            )
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_page(request, 500, "Unexpected error", "It was logged; please try again.")

    for exc_type in OUTAGE_TYPES:
        app.add_exception_handler(exc_type, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
