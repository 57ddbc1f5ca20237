"""`mp up` keeps its children running: a crashed child is restarted with
backoff, a crash loop stops everything, `mp status` shows each child, and
`mp` commands in a second terminal find the running stack."""

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

from cli.embedded import Child, port_open
from cli.stack import pid_alive
from cli.supervisor import CrashLoop, Supervisor
from tests.cli.test_up import PLATFORM_ENV, ROOT, Up, up_dir  # noqa: F401 - up_dir is a fixture

CHILDREN = {"postgres", "redis", "temporal", "worker", "api", "tracking", "web"}


def _poll_until(supervisor: Supervisor, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "supervisor did not get there in time"
        supervisor.poll()
        time.sleep(0.02)


def test_crashed_child_restarts_with_a_log_line():
    lines: list[str] = []
    supervisor = Supervisor(backoff_base=0.1, log=lines.append)
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    child.start()
    supervised = supervisor.add(child, port=None)
    first = child.proc.pid
    try:
        os.kill(first, signal.SIGKILL)
        _poll_until(supervisor, lambda: supervised.restarts == 1)
        assert child.alive() and child.proc.pid != first
        assert lines == [
            "mp up: sleeper exited (code -9, killed by SIGKILL); restarting in 0.1s",
            f"mp up: sleeper restarted (pid {child.proc.pid}, restart 1)",
        ]
        assert supervisor.status() == [
            {
                "name": "sleeper",
                "pid": child.proc.pid,
                "state": "up",
                "restarts": 1,
                "port": None,
                "last_exit": -9,
            }
        ]
    finally:
        child.stop()


def test_crash_loop_stops_with_backoff_between_restarts():
    lines: list[str] = []
    supervisor = Supervisor(backoff_base=0.05, backoff_cap=0.2, max_crashes=5, window=30, log=lines.append)
    child = Child("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    child.start()
    supervised = supervisor.add(child)
    started = time.monotonic()
    with pytest.raises(CrashLoop) as loop:
        _poll_until(supervisor, lambda: False, timeout=20)
    # Waits of 0.05 + 0.1 + 0.2 + 0.2 s (doubling, capped) between the five crashes.
    assert time.monotonic() - started >= 0.55
    assert [line for line in lines if "exited" in line] == [
        f"mp up: flaky exited (code 3); restarting in {delay}s" for delay in ("0.05", "0.1", "0.2", "0.2")
    ]
    assert supervised.restarts == 4 and supervised.state == "down"
    assert "flaky exited (code 3) and crashed 5 times within 30s" in str(loop.value)


def _second_terminal_env() -> dict[str, str]:
    # A user's second shell: no service settings, no data dir setting.
    drop = set(PLATFORM_ENV) | {"MP_DATA_DIR", "SECRET_KEY", "REDIS_PREFIX"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MP_")}
    return env | {"PYTHONPATH": str(ROOT)}


async def mp_beside(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`mp ...` run in `cwd` (where `mp up` keeps .mp/) from a fresh shell."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=_second_terminal_env(),
        cwd=cwd,
        timeout=120,
    )


async def _eventually_ok(
    request, what: str, up: Up, timeout: float = 90, ok: int = 200, done=lambda r: True
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = await request()
            if response.status_code == ok and done(response):
                return response
            last = (response.status_code, response.text[:300])
        except httpx.TransportError as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} never answered {ok} (last: {last!r}); mp up said:\n{up.text()[-6000:]}")


async def _wait_for_line(up: Up, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in up.text():
        assert up.proc.poll() is None, f"mp up exited:\n{up.text()}"
        assert time.monotonic() < deadline, f"no {needle!r} in:\n{up.text()}"
        await asyncio.sleep(0.3)


def _children(up: Up) -> dict[str, dict]:
    state = json.loads((up.data_dir / "up.json").read_text())
    return {c["name"]: c for c in state["children"]}


@pytest.mark.timeout(900)
async def test_up_restarts_killed_children_and_is_found_from_a_second_terminal(up_dir):  # noqa: F811
    up = Up(up_dir)
    pids: set[int] = set()
    try:
        await up.wait_until_up()
        keys = up.keys()
        children = _children(up)
        assert set(children) == CHILDREN and all(c["state"] == "up" for c in children.values())
        pids |= {c["pid"] for c in children.values()}

        status = await mp_beside(up_dir, "status")
        assert status.returncode == 0, status.stderr
        for name in CHILDREN:
            assert name in status.stdout
        assert str(up.ports["TRACKING_PORT"]) in status.stdout

        # kill -9 the tracking API and the embedded Redis.
        os.kill(children["tracking"]["pid"], signal.SIGKILL)
        os.kill(children["redis"]["pid"], signal.SIGKILL)
        for name in ("tracking", "redis"):
            await _wait_for_line(up, f"mp up: {name} exited (code -9, killed by SIGKILL); restarting in 1s")
            await _wait_for_line(up, f"mp up: {name} restarted")
        async with httpx.AsyncClient(timeout=10) as client:
            await _eventually_ok(
                lambda: client.post(
                    up.url("TRACKING_PORT") + "/track",
                    json={"userId": "after-crash", "event": "Came Back"},
                    headers={"Authorization": f"Bearer {keys['public_key']}"},
                ),
                "/track after tracking and Redis were killed",
                up,
            )
        status = (await mp_beside(up_dir, "status", "--json")).stdout
        by_name = {c["name"]: c for c in json.loads(status)["children"]}
        for name in ("tracking", "redis"):
            assert by_name[name]["state"] == "up" and by_name[name]["restarts"] == 1, by_name[name]
            assert by_name[name]["pid"] != children[name]["pid"] and by_name[name]["listening"]
            pids.add(by_name[name]["pid"])

        # kill -9 PostgreSQL: it comes back and the API answers again by itself.
        os.kill(children["postgres"]["pid"], signal.SIGKILL)
        await _wait_for_line(up, "mp up: postgres exited (code -9, killed by SIGKILL)")
        await _wait_for_line(up, "mp up: postgres restarted")
        async with httpx.AsyncClient(timeout=10) as client:
            listed = await _eventually_ok(
                lambda: client.get(
                    up.url("PORT") + "/api/v1/profiles",
                    headers={"Authorization": f"Bearer {keys['secret_key']}"},
                ),
                "the management API after PostgreSQL was killed",
                up,
            )
        assert "after-crash" in {p["external_id"] for p in listed.json()["data"]}
        pids.add(_children(up)["postgres"]["pid"])

        # kill -9 Temporal, the worker and the API: a segment refresh (API ->
        # Temporal -> worker -> PostgreSQL) works again once they are back.
        children = _children(up)
        for name in ("temporal", "worker", "api"):
            os.kill(children[name]["pid"], signal.SIGKILL)
        for name in ("temporal", "worker", "api"):
            await _wait_for_line(up, f"mp up: {name} exited (code -9, killed by SIGKILL)")
            await _wait_for_line(up, f"mp up: {name} restarted")
        headers = {"Authorization": f"Bearer {keys['secret_key']}"}
        async with httpx.AsyncClient(timeout=40, headers=headers) as client:
            segment = await _eventually_ok(
                lambda: client.post(
                    up.url("PORT") + "/api/v1/segments",
                    json={"name": "All", "definition": {"type": "trait", "path": "x", "op": "not_exists"}},
                ),
                "creating a segment after the API was killed",
                up,
                ok=201,
            )
            refreshed = await _eventually_ok(
                lambda: client.post(
                    up.url("PORT") + f"/api/v1/segments/{segment.json()['id']}/recalculate",
                    params={"wait": 30},
                ),
                "a segment refresh after Temporal and the worker were killed",
                up,
                done=lambda r: r.json()["status"] == "completed",
            )
        assert refreshed.json()["member_count"] >= 1, refreshed.json()
        pids |= {c["pid"] for c in _children(up).values()}

        # A second terminal: `mp keys create` finds the embedded PostgreSQL.
        created = await mp_beside(up_dir, "keys", "create", "--workspace", "second", "--json")
        assert created.returncode == 0, created.stderr
        second = json.loads(created.stdout)
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(
                up.url("TRACKING_PORT") + "/identify",
                json={"userId": "second-terminal"},
                headers={"Authorization": f"Bearer {second['public_key']}"},
            )
        assert r.status_code == 200, r.text
    finally:
        code = await up.ctrl_c()
    assert code == 0, up.text()
    for pid in pids:
        assert not pid_alive(pid), f"pid {pid} still running after Ctrl-C"
    for name, port in up.ports.items():
        assert not port_open(port), f"{name} still listening on :{port} after Ctrl-C"

    # Nothing running now: one line each, exit code 1.
    status = await mp_beside(up_dir, "status")
    assert status.returncode == 1 and status.stdout.strip().startswith("mp up is not running")
    assert len(status.stdout.strip().splitlines()) == 1
    failed = await mp_beside(up_dir, "keys", "create", "--workspace", "x", "--json")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip() == (
        f"mp: PostgreSQL at 127.0.0.1:{up.ports['MP_POSTGRES_PORT']} is not reachable: "
        "connection refused — is `./mp up` running?"
    )


@pytest.mark.timeout(600)
async def test_up_stops_everything_when_a_child_keeps_crashing(up_dir):  # noqa: F811
    up = Up(up_dir)
    try:
        await up.wait_until_up()
        pids = {c["pid"] for c in _children(up).values()}
        for crash in range(1, 6):
            tracking = _children(up)["tracking"]
            assert tracking["state"] == "up", tracking
            os.kill(tracking["pid"], signal.SIGKILL)
            if crash < 5:
                await _wait_for_line(up, f"restart {crash})")
                deadline = time.monotonic() + 30
                while _children(up)["tracking"]["restarts"] < crash:  # the state file follows
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                pids.add(_children(up)["tracking"]["pid"])
        code = await asyncio.to_thread(up.proc.wait, 90)
    finally:
        if up.proc.poll() is None:
            await up.ctrl_c()
    assert code == 1
    assert "mp up: tracking exited (code -9, killed by SIGKILL) and crashed 5 times within 60s" in up.text()
    assert "Stopped." in up.text()
    for pid in pids:
        assert not pid_alive(pid), f"pid {pid} still running after the crash loop"
    for name, port in up.ports.items():
        assert not port_open(port), f"{name} still listening on :{port}"
    status = await mp_beside(up_dir, "status")
    assert status.returncode == 1 and "not running" in status.stdout
