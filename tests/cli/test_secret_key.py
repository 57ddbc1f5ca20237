"""The api, tracking and worker processes refuse the development
SECRET_KEY with one line, unless a real key is given or
MP_ALLOW_DEV_SECRET=1 says the dev key is meant (`mp up` passes its
children a key it generated, which tests/cli/test_up.py starts with)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from core.settings import DEV_SECRET_KEY, Settings, refuse_dev_secret
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
# Settings a test must not inherit from the shell that runs the suite.
CLEARED = ("SECRET_KEY", "MP_ALLOW_DEV_SECRET", "PORT", "TRACKING_PORT", "WEB_PORT", "TEMPORAL_TASK_QUEUE")


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a process started by hand against this run's services."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env |= {
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "TRACKING_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),
        "TEMPORAL_TASK_QUEUE": f"secret-{uuid.uuid4().hex[:8]}",
    }
    return env | extra


async def start(process: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """`mp <process>` in a directory without a .env, so only `env` counts."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        process,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def until_ready(proc: asyncio.subprocess.Process, url: str, timeout: float = 60) -> int:
    """Poll `url` until it answers; the status code, or a failure when the process exits first."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                err = (await proc.stderr.read()).decode()
                raise AssertionError(f"exited with {proc.returncode}: {err}")
            try:
                return (await client.get(url)).status_code
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def test_refuse_dev_secret_only_for_the_default_key():
    with pytest.raises(SystemExit) as refused:
        refuse_dev_secret(Settings(_env_file=None, secret_key=DEV_SECRET_KEY), "api")
    assert str(refused.value).startswith("mp api: SECRET_KEY is the development default")
    refuse_dev_secret(Settings(_env_file=None, secret_key="a-real-key"), "api")
    refuse_dev_secret(Settings(_env_file=None, secret_key=DEV_SECRET_KEY, MP_ALLOW_DEV_SECRET=True), "api")


@pytest.mark.parametrize("process", ["api", "tracking", "web", "worker"])
async def test_process_with_the_dev_key_exits_with_one_line(process, settings, tmp_path):
    proc = await start(process, process_env(settings), tmp_path)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await stop(proc)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith(f"mp {process}: SECRET_KEY is the development default")
    assert "MP_ALLOW_DEV_SECRET=1" in lines[0]
    assert out == b""


@pytest.mark.parametrize(
    ("process", "port_setting", "key_setting"),
    [
        ("api", "PORT", {"MP_ALLOW_DEV_SECRET": "1"}),  # the dev key, allowed on purpose
        ("tracking", "TRACKING_PORT", {"SECRET_KEY": "a-real-key-" + uuid.uuid4().hex}),
        ("web", "WEB_PORT", {"SECRET_KEY": "a-real-key-" + uuid.uuid4().hex}),
    ],
)
async def test_http_process_starts_with_a_real_or_allowed_key(
    process, port_setting, key_setting, settings, tmp_path
):
    env = process_env(settings, **key_setting)
    proc = await start(process, env, tmp_path)
    try:
        # The dashboard publishes no OpenAPI document; it answers /health.
        path = "/health" if process == "web" else "/openapi.json"
        assert await until_ready(proc, f"http://127.0.0.1:{env[port_setting]}{path}") == 200
    finally:
        await stop(proc)


async def test_worker_starts_with_a_real_key(settings, tmp_path):
    proc = await start("worker", process_env(settings, SECRET_KEY="a-real-key-" + uuid.uuid4().hex), tmp_path)
    try:
        # It logs (on stderr) once it polls its task queue.
        deadline = time.monotonic() + 60
        seen = b""
        while b"worker polling" not in seen:
            assert time.monotonic() < deadline, seen.decode()
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, f"worker exited: {seen.decode()}"
            seen += line
    finally:
        await stop(proc)
