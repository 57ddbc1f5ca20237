"""What both HTTP apps share: a fast JSON response and the error handlers."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import OUTAGE_TYPES, AppError, Conflict, ServiceUnavailable, as_outage

log = logging.getLogger(__name__)

_OUTAGE_LOG_SECONDS = 10.0
_outage_logged: dict[str, float] = {}


def log_outage(outage: ServiceUnavailable, exc: BaseException) -> None:
    """Log an outage answered with 503, at most once per 10 s per message:
    during an outage every request fails the same way, and a line per
    request would cost more than answering it."""
    now = time.monotonic()
    key = str(outage.detail)
    if now - _outage_logged.get(key, -_OUTAGE_LOG_SECONDS) >= _OUTAGE_LOG_SECONDS:
        _outage_logged[key] = now
        log.warning("answering 503: %s (%s: %s)", outage.detail, type(exc).__name__, exc)


class JSONResponse(Response):
    """JSON rendered by orjson (datetimes, UUIDs and dataclasses included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as `{"error": code, "detail": ...}`; never a bare 500 page."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]} for err in exc.errors()]
        status = 400 if any(err.get("type") == "json_invalid" for err in exc.errors()) else 422
        code = "bad_request" if status == 400 else "validation_error"
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing and framework errors (unknown path 404, 405, FastAPI's
        # "error parsing the body") in the same shape as every other error.
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
        # A unique or foreign key constraint caught what a service's own check
        # missed because a concurrent request committed in between (e.g. two
        # creates with one name): that is a conflict, not a server error.
        log.info("constraint conflict on %s %s: %s", request.method, request.url.path, exc.orig)
        error = Conflict("the change conflicts with data a concurrent request just stored; re-read and retry")
        return JSONResponse(error.to_dict(), status_code=error.status_code)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        outage = as_outage(exc)
        if outage is not None:
            log_outage(outage, exc)
            return JSONResponse(outage.to_dict(), status_code=outage.status_code, headers=outage.headers())
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": "internal", "detail": "unexpected error; it was logged"}, status_code=500
        )

    # The types that may be outages get handlers of their own: Starlette
    # answers those inside the route, while the catch-all `Exception` handler
    # runs in its outermost middleware, which re-raises to the server after
    # answering (a traceback per request during an outage).
    for exc_type in OUTAGE_TYPES:
        app.add_exception_handler(exc_type, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
