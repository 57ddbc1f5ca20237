"""What both HTTP apps share: a fast JSON response and the error handlers."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from core.errors import AppError

log = logging.getLogger(__name__)


class JSONResponse(Response):
    """JSON rendered by orjson (datetimes, UUIDs and dataclasses included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal", "detail": "unexpected error; it was logged"}, status_code=500
        )
