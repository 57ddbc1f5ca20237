"""`mp up` end to end: a new user's first command, run twice on one data dir,
then against external services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from cli.embedded import port_open
from tests.support.servers import free_port
from tests.support.temporal import new_namespace

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "PORT",
    "TRACKING_PORT",
    "WEB_PORT",
)


class Up:
    """One `mp up` process and the ports it was given."""

    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.ports = {
            "MP_POSTGRES_PORT": free_port(),
            "MP_REDIS_PORT": free_port(),
            "MP_TEMPORAL_PORT": free_port(),
            "MP_TEMPORAL_UI_PORT": free_port(),
            "PORT": free_port(),
            "TRACKING_PORT": free_port(),
            "WEB_PORT": free_port(),
        }
        self.data_dir = tmp / ".mp"
        self.log = tmp / f"up-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k not in PLATFORM_ENV}
        env.update({k: str(v) for k, v in self.ports.items()})
        env.update({"MP_DATA_DIR": str(self.data_dir), "PYTHONPATH": str(ROOT)})
        env.update(extra_env or {})
        self.out = open(self.log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "up"], cwd=tmp, env=env, stdout=self.out, stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return self.log.read_text()

    async def wait_until_up(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while "Marketing platform is up." not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"mp up exited with {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mp up not ready after {timeout}s:\n{self.text()}")
            await asyncio.sleep(0.5)

    async def ctrl_c(self, timeout: float = 90) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(self.proc.wait, timeout)
        self.out.close()
        return code

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def keys(self) -> dict[str, str]:
        return json.loads((self.data_dir / "default-workspace.json").read_text())


@pytest.fixture
def up_dir(tmp_path: Path) -> Path:
    # The embedded PostgreSQL runs as an unprivileged user when tests run as
    # root; it must be able to reach the data dir.
    tmp_path.chmod(0o755)
    return tmp_path


@pytest.mark.timeout(600)
async def test_up_serves_everything_and_keeps_its_data(up_dir):
    first = Up(up_dir)
    try:
        await first.wait_until_up()
        keys = first.keys()
        out = first.text()
        for needle in (keys["public_key"], keys["secret_key"], keys["workspace_id"], "Temporal UI"):
            assert needle in out
        async with httpx.AsyncClient(timeout=30) as client:
            tracked = await client.post(
                first.url("TRACKING_PORT") + "/track",
                json={"userId": "first-run", "event": "Signed Up"},
                headers={"Authorization": f"Bearer {keys['public_key']}"},
            )
            assert tracked.status_code == 200, tracked.text
            listed = await client.get(
                first.url("PORT") + "/api/v1/profiles",
                headers={"Authorization": f"Bearer {keys['secret_key']}"},
            )
            assert [p["external_id"] for p in listed.json()["data"]] == ["first-run"]
            assert (await client.get(first.url("PORT") + "/docs")).status_code == 200
            assert (await client.get(first.url("MP_TEMPORAL_UI_PORT"))).status_code == 200
            # The dashboard is a supervised child too.
            login = await client.get(first.url("WEB_PORT") + "/login")
            assert login.status_code == 200 and "Secret key" in login.text

        # The partition-maintenance schedule ran its first workflow.
        client = await Client.connect(f"127.0.0.1:{first.ports['MP_TEMPORAL_PORT']}")
        for _ in range(120):
            runs = [w async for w in client.list_workflows('WorkflowType = "EventPartitionsWorkflow"')]
            if runs and runs[0].status == WorkflowExecutionStatus.COMPLETED:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"no completed EventPartitionsWorkflow: {runs}")
    finally:
        code = await first.ctrl_c()
    assert code == 0, first.text()
    assert "Stopped." in first.text()
    for name, port in first.ports.items():
        assert not port_open(port), f"{name} still listening on :{port} after Ctrl-C"

    second = Up(up_dir)
    try:
        await second.wait_until_up()
        assert "initialising PostgreSQL" not in second.text()
        assert second.keys() == keys
        async with httpx.AsyncClient(timeout=30) as client:
            listed = await client.get(
                second.url("PORT") + "/api/v1/profiles",
                headers={"Authorization": f"Bearer {keys['secret_key']}"},
            )
        assert [p["external_id"] for p in listed.json()["data"]] == ["first-run"]
    finally:
        assert await second.ctrl_c() == 0, second.text()


@pytest.mark.timeout(300)
async def test_up_uses_configured_services(up_dir, settings, temporal_address, temporal_client):
    namespace = await new_namespace(temporal_client, "up")
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_NAMESPACE": namespace,
    }
    up = Up(up_dir, env)
    try:
        await up.wait_until_up()
        out = up.text()
        assert "PostgreSQL: using DATABASE_URL" in out and "Redis: using REDIS_URL" in out
        assert "Temporal: using TEMPORAL_ADDRESS" in out
        assert not (up.data_dir / "postgres").exists()
        for port in ("MP_POSTGRES_PORT", "MP_REDIS_PORT", "MP_TEMPORAL_PORT"):
            assert not port_open(up.ports[port])
        keys = up.keys()
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(
                up.url("TRACKING_PORT") + "/identify",
                json={"userId": "ext"},
                headers={"Authorization": f"Bearer {keys['public_key']}"},
            )
        assert r.status_code == 200
    finally:
        assert await up.ctrl_c() == 0, up.text()
