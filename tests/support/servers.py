"""Run an ASGI app under a real uvicorn server on a free port, in the
test's event loop or as a process of its own, so tests speak real HTTP to it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port nothing listens on right now, and never one this process
    was given before: successive calls can get the same port back from the
    kernel (an `mp up` in the suite once got one port for both the Temporal
    UI and the dashboard)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@asynccontextmanager
async def serve(app: object, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a child process these settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json", by_alias=True).items():
        if value is None:
            continue
        env[name.upper()] = value if isinstance(value, str) else json.dumps(value)
    return env


@asynccontextmanager
async def serve_process(command: str, settings: Settings) -> AsyncIterator[str]:
    """Run `mp <command>` (`api` or `tracking`) as its own uvicorn process on
    a free port until the block ends; yields its base URL. Races between a
    server and its clients only show across processes."""
    port = free_port()
    port_setting = "TRACKING_PORT" if command == "tracking" else "PORT"
    env = {**os.environ, **settings_env(settings), "HOST": "127.0.0.1", port_setting: str(port)}
    env["PYTHONPATH"] = str(ROOT)
    # A file, not a pipe: the access log would fill a pipe nobody reads and stall the server.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the child
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def tail() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-2000:]

    try:
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=2) as probe:
            while True:
                if child.returncode is not None:
                    raise RuntimeError(f"mp {command} exited:\n{tail()}")
                try:
                    if (await probe.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mp {command} did not answer on :{port} within 60 s:\n{tail()}")
                await asyncio.sleep(0.1)
        yield url
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), 20)
            except TimeoutError:
                child.kill()
                await child.wait()
        log.close()
