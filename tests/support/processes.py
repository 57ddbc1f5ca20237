"""Real platform processes for fault tests: `python -m cli <command>`
(tracking, worker) against the suite's services, and a Temporal dev server
that keeps its state in a SQLite file so it can be stopped and started
again. Each logs to a file so a failing test can show why."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from cli import embedded
from core.settings import Settings
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from tests.support import services

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `python -m cli` child configured like
    `settings`: every field becomes its environment variable
    (DATABASE_URL, ALLOW_PRIVATE_PROVIDER_HOSTS, …), so the child sees the
    same services, keys and test allowances, whatever a `.env` says."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1"}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[(info.alias or name).upper()] = str(value)
    return {**env, **extra}


@contextmanager
def cli_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`python -m cli *args`, killed (if still alive) when the block ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        kill(proc)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL and reap (no-op when it already exited)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def logged(log: Path, marker: str) -> bool:
    """Whether the log has a line containing `marker` yet."""
    return log.exists() and marker in log.read_text(errors="replace")


def tail(log: Path, lines: int = 30) -> str:
    """The end of a log, for assertion messages."""
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def worker_ready(log: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the `mp worker` process logs that it polls its task queue;
    fails at once, with the log's end, if it exits first."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not logged(log, "worker polling"):
        if proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{tail(log)}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"worker not polling after {timeout:.0f}s:\n{tail(log)}")
        await asyncio.sleep(0.1)


def temporal_dev_server(
    data_dir: Path, port: int, *, persist: bool = True, metrics_port: int | None = None
) -> embedded.Child:
    """A Temporal dev server (not started) on `port`, persisting to
    `data_dir/temporal.db` (in memory with `persist=False`). Start a
    persisting one again with the same arguments and it finds its workflows."""
    return services.temporal_child(
        data_dir, port, data_dir / "temporal.db" if persist else None, metrics_port=metrics_port
    )


async def wait_for_temporal(address: str, timeout: float = 90) -> None:
    """Until a client can connect (the frontend listens before it serves)."""
    from temporalio.client import Client

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await Client.connect(address)
            return
        except RuntimeError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.3)


@dataclass
class OwnStack:
    """A database of a test module's own, with its engine and settings (a
    task queue of its own too), for tests that run real worker processes."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker


@asynccontextmanager
async def own_stack(
    pg_server: str, settings: Settings, prefix: str, **updates: object
) -> AsyncIterator[OwnStack]:
    """Create, migrate and finally drop that database; `updates` change the settings."""
    url = await services.create_database(pg_server, prefix)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=3)
    own = settings.model_copy(
        update={"database_url": url, "temporal_task_queue": f"{prefix}-{uuid.uuid4().hex[:8]}", **updates}
    )
    try:
        yield OwnStack(own, engine, create_sessionmaker(engine))
    finally:
        await engine.dispose()
        await services.drop_database(pg_server, url)
