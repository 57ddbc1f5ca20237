"""The baseline: a bare FastAPI endpoint that answers 202 and does nothing
else, served the same way as the tracking API (uvicorn, uvloop, httptools,
one process, no access log)."""

from __future__ import annotations

from fastapi import FastAPI, Response

app = FastAPI()


@app.post("/track")
async def track() -> Response:
    return Response(status_code=202)


@app.post("/track/batch")
async def batch() -> Response:
    return Response(status_code=202)
