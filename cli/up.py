"""`mp up`: the whole platform on one machine.

Starts (or reuses, when their URLs are set) PostgreSQL, Redis and the
Temporal dev server, migrates, makes a default workspace, sets up Temporal
(search attributes and schedules), then runs the api, tracking and worker
processes until Ctrl-C stops everything in reverse order. A child that
crashes is restarted with backoff (cli/supervisor.py); `.mp/up.json` says
what runs where, for `mp status` and the other `mp` commands
(cli/stack.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from cli import embedded, stack
from cli.embedded import Child, StartError
from cli.supervisor import CrashLoop, Supervisor
from core.settings import Settings

DATABASE_NAME = "marketing"


def _check_port_free(port: int, what: str, setting: str) -> None:
    if embedded.port_open(port):
        raise StartError(
            f":{port} is already in use, so {what} cannot start there "
            f"(set {setting}, or stop the other process)"
        )


class Platform:
    """Every child of one `mp up`, in start order."""

    def _given(self, field: str) -> bool:
        # Set (non-empty) in the environment or .env: use it, start nothing.
        return field in self.settings.model_fields_set and bool(getattr(self.settings, field))

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.supervisor = Supervisor(log=lambda line: print(line, flush=True))
        self.env = dict(os.environ)

    @property
    def children(self) -> list[Child]:
        """Every child, in start order."""
        return [s.child for s in self.supervisor.children]

    def _start(self, child: Child, port: int | None = None) -> Child:
        child.start()
        self.supervisor.add(child, port)
        return child

    def stop(self) -> None:
        """Stop children newest first (apps, then Temporal, Redis, PostgreSQL)."""
        for supervised in reversed(self.supervisor.children):
            if supervised.child.alive():
                print(f"  stopping {supervised.name}...", flush=True)
            supervised.child.stop()
            supervised.state = "down"

    def write_state(self, *, stopped: bool = False) -> None:
        """Record what runs where in .mp/up.json (cli/stack.py reads it)."""
        keys = ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS", "TEMPORAL_UI_URL")
        resolved = self.resolved_settings()
        services = {k: self.env.get(k) or str(getattr(resolved, k.lower())) for k in keys}
        stack.write_state(
            self.data_dir,
            {
                "pid": os.getpid(),
                "stopped": stopped,
                "data_dir": str(self.data_dir),
                "services": services,
                "api_url": f"http://127.0.0.1:{self.settings.port}",
                "tracking_url": f"http://127.0.0.1:{self.settings.tracking_port}",
                "web_url": f"http://127.0.0.1:{self.settings.web_port}",
                "children": self.supervisor.status(),
            },
        )

    # -- backing services ------------------------------------------------

    def start_services(self) -> None:
        s = self.settings
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if self._given("database_url"):
            print("  PostgreSQL: using DATABASE_URL", flush=True)
        else:
            _check_port_free(s.embedded_postgres_port, "PostgreSQL", "MP_POSTGRES_PORT or DATABASE_URL")
            pg = self._start(
                embedded.postgres_child(self.data_dir, s.embedded_postgres_port), s.embedded_postgres_port
            )
            embedded.wait_for_port(pg, s.embedded_postgres_port, 60)
            embedded.ensure_database(s.embedded_postgres_port, DATABASE_NAME)
            self.env["DATABASE_URL"] = (
                f"postgresql://postgres@127.0.0.1:{s.embedded_postgres_port}/{DATABASE_NAME}"
            )
            print(
                f"  PostgreSQL: started on :{s.embedded_postgres_port} "
                f"(data in {self.data_dir / 'postgres'})",
                flush=True,
            )
        if self._given("redis_url"):
            print("  Redis: using REDIS_URL", flush=True)
        else:
            _check_port_free(s.embedded_redis_port, "Redis", "MP_REDIS_PORT or REDIS_URL")
            rd = self._start(
                embedded.redis_child(self.data_dir, s.embedded_redis_port), s.embedded_redis_port
            )
            embedded.wait_for_port(rd, s.embedded_redis_port, 30)
            self.env["REDIS_URL"] = f"redis://127.0.0.1:{s.embedded_redis_port}/0"
            print(f"  Redis: started on :{s.embedded_redis_port}", flush=True)
        if self._given("temporal_address"):
            print("  Temporal: using TEMPORAL_ADDRESS", flush=True)
        else:
            from worker.setup import dev_server_search_attribute_args

            _check_port_free(s.embedded_temporal_port, "Temporal", "MP_TEMPORAL_PORT or TEMPORAL_ADDRESS")
            tp = self._start(
                embedded.temporal_child(
                    self.data_dir,
                    s.embedded_temporal_port,
                    s.embedded_temporal_ui_port,
                    dev_server_search_attribute_args(),
                ),
                s.embedded_temporal_port,
            )
            embedded.wait_for_port(tp, s.embedded_temporal_port, 90)
            self.env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{s.embedded_temporal_port}"
            self.env.setdefault("TEMPORAL_UI_URL", f"http://localhost:{s.embedded_temporal_ui_port}")
            print(
                f"  Temporal: dev server on :{s.embedded_temporal_port}, "
                f"UI on :{s.embedded_temporal_ui_port}",
                flush=True,
            )

    def ensure_secret(self) -> None:
        """A stable SECRET_KEY for signed links, kept in the data dir."""
        if self._given("secret_key"):
            return
        path = self.data_dir / "secret_key"
        if not path.exists():
            import secrets

            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        self.env["SECRET_KEY"] = path.read_text().strip()

    def ensure_secrets_key(self) -> None:
        """A stable SECRETS_KEYS (a Fernet key for provider credentials), kept in the data dir."""
        if self._given("secrets_keys"):
            return
        path = self.data_dir / "secrets_keys"
        if not path.exists():
            from cryptography.fernet import Fernet

            path.write_text(Fernet.generate_key().decode())
            path.chmod(0o600)
        self.env["SECRETS_KEYS"] = path.read_text().strip()

    def resolved_settings(self) -> Settings:
        """Settings as the children will see them."""
        keys = (
            "DATABASE_URL",
            "REDIS_URL",
            "TEMPORAL_ADDRESS",
            "TEMPORAL_UI_URL",
            "SECRET_KEY",
            "SECRETS_KEYS",
        )
        return self.settings.model_copy(update={k.lower(): self.env[k] for k in keys if k in self.env})

    # -- application processes ---------------------------------------------

    def start_apps(self) -> None:
        s = self.settings
        _check_port_free(s.port, "the management API", "PORT")
        _check_port_free(s.tracking_port, "the tracking API", "TRACKING_PORT")
        _check_port_free(s.web_port, "the dashboard", "WEB_PORT")
        python = sys.executable
        apps = (("api", s.port), ("tracking", s.tracking_port), ("web", s.web_port))
        self._start(Child("worker", [python, "-m", "cli", "worker"], env=self.env))
        started = [
            (self._start(Child(name, [python, "-m", "cli", name], env=self.env), port), port)
            for name, port in apps
        ]
        for child, port in started:
            embedded.wait_for_port(child, port, 60)


async def _bootstrap(settings: Settings, data_dir: Path) -> dict:
    """Migrate, make the default workspace, set Temporal up. Returns the keys."""
    from core.clients import connect_temporal
    from db.engine import create_engine, create_sessionmaker, session_scope
    from db.migrate import upgrade
    from worker.setup import setup_temporal
    from workspaces.repository import workspace_name
    from workspaces.service import create_workspace_keys

    print("  migrating the database...", flush=True)
    await asyncio.to_thread(upgrade, settings.database_url, "head", settings)

    keys_file = data_dir / "default-workspace.json"
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        keys = json.loads(keys_file.read_text()) if keys_file.exists() else None
        async with session_scope(create_sessionmaker(engine)) as session:
            import uuid

            if keys is None or await workspace_name(session, uuid.UUID(keys["workspace_id"])) is None:
                created = await create_workspace_keys(session, "default")
                keys = {
                    "workspace_id": str(created.workspace_id),
                    "public_key": created.public_key,
                    "secret_key": created.secret_key,
                }
                keys_file.write_text(json.dumps(keys, indent=2))
                keys_file.chmod(0o600)
    finally:
        await engine.dispose()

    deadline = time.monotonic() + 90
    while True:
        try:
            client = await connect_temporal(settings)
            added, created = await setup_temporal(client, settings)
            break
        except Exception:  # the dev server's frontend (or a new namespace) may lag its port
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    if added:
        print(f"  Temporal: registered search attributes {', '.join(added)}", flush=True)
    if created:
        print(f"  Temporal: created schedules {', '.join(created)}", flush=True)
    return keys


def run_up(settings: Settings) -> int:
    """Run until Ctrl-C; returns the exit code."""
    platform = Platform(settings)
    platform.data_dir.mkdir(parents=True, exist_ok=True)
    lock = platform.data_dir / "up.pid"
    if lock.exists():
        try:
            other = int(lock.read_text())
            os.kill(other, 0)
            print(f"mp up is already running (pid {other}) with data in {platform.data_dir}", file=sys.stderr)
            return 1
        except (ProcessLookupError, ValueError):
            pass
    lock.write_text(str(os.getpid()))

    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    code = 0
    try:
        print("Starting the marketing platform...", flush=True)
        platform.start_services()
        platform.ensure_secret()
        platform.ensure_secrets_key()
        resolved = platform.resolved_settings()
        keys = asyncio.run(_bootstrap(resolved, platform.data_dir))
        platform.start_apps()
        platform.write_state()
        _banner(resolved, keys, platform.data_dir)
        while not stopping:
            if platform.supervisor.poll():
                platform.write_state()
            time.sleep(0.3)
    except CrashLoop as exc:
        print(f"\nmp up: {exc}.", file=sys.stderr, flush=True)
        if exc.supervised.child.log_path:
            print(exc.supervised.child.tail(), file=sys.stderr, flush=True)
        code = 1
    except StartError as exc:
        print(f"\nmp up: {exc}", file=sys.stderr, flush=True)
        code = 1
    except Exception as exc:  # noqa: BLE001 - any start-up failure: report it, then clean up below
        print(f"\nmp up failed: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("Stopping...", flush=True)
        platform.stop()
        platform.write_state(stopped=True)
        lock.unlink(missing_ok=True)
        print("Stopped.", flush=True)
    return code


def _banner(settings: Settings, keys: dict, data_dir: Path) -> None:
    print(
        f"""
Marketing platform is up.

  Dashboard        http://localhost:{settings.web_port}        (sign in with the secret key below)
  Management API   http://localhost:{settings.port}        (OpenAPI docs: http://localhost:{settings.port}/docs)
  Tracking API     http://localhost:{settings.tracking_port}
  Temporal UI      {settings.temporal_ui_url}

  Default workspace  {keys["workspace_id"]}
    public key  (tracking)        {keys["public_key"]}
    secret key  (management API)  {keys["secret_key"]}

  Data and logs in {data_dir}.  Press Ctrl-C to stop.
  A child that crashes is restarted; `./mp status` in another terminal shows them all.

Try:
  curl -X POST http://localhost:{settings.tracking_port}/track \\
       -H 'Authorization: Bearer {keys["public_key"]}' \\
       -H 'Content-Type: application/json' -d '{{"userId":"u1","event":"Signed Up"}}'
  curl http://localhost:{settings.port}/api/v1/profiles -H 'Authorization: Bearer {keys["secret_key"]}'
""",
        flush=True,
    )
