"""What a running `mp up` leaves in its data dir for other `mp` commands.

`mp up` writes `<data dir>/up.json`: its pid, the URLs of the services it
started or was given, and each child's pid, state, restarts and port. A
command run in a second terminal (`mp keys create`, `mp seed`, ...) reads
it to reach the same PostgreSQL, Redis and Temporal, and the generated
secret key next to it; a setting given in the environment or `.env` still
wins. `mp status` reads it too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.settings import Settings, get_settings

STATE_FILE = "up.json"
SECRET_FILE = "secret_key"

# Settings field -> key in the state file's "services".
SERVICE_FIELDS = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "temporal_address": "TEMPORAL_ADDRESS",
    "temporal_ui_url": "TEMPORAL_UI_URL",
}


def state_path(data_dir: Path) -> Path:
    """Where `mp up` keeps its state."""
    return data_dir / STATE_FILE


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file in one rename, so a reader never sees half of
    it; only its owner may read it (a given DATABASE_URL may hold a password)."""
    path = state_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(state, indent=2))
    os.replace(tmp, path)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The last state `mp up` wrote in this data dir, or None."""
    try:
        return json.loads(state_path(data_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def running_state(data_dir: Path) -> dict[str, Any] | None:
    """The state of an `mp up` that is running now, else None."""
    state = read_state(data_dir)
    if state is None or state.get("stopped") or not pid_alive(state.get("pid")):
        return None
    return state


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment variables that point a command at the `mp up` of this
    data dir: each service URL, and the generated secret key, that was not
    given explicitly. A stopped stack's URLs are used too, so the error
    names the embedded service that is down instead of a default port
    nothing ever served."""
    data_dir = settings.data_dir
    state = read_state(data_dir)
    env: dict[str, str] = {}
    if state is not None:
        for field, key in SERVICE_FIELDS.items():
            value = state.get("services", {}).get(key)
            given = field in settings.model_fields_set and getattr(settings, field)
            if value and not given:  # empty counts as not given, as for `mp up`
                env[key] = value
    secret = data_dir / SECRET_FILE
    if "secret_key" not in settings.model_fields_set and secret.exists():
        try:
            env["SECRET_KEY"] = secret.read_text().strip()
        except PermissionError:  # another user's stack: keep the setting
            pass
    return env


def use_stack() -> Settings:
    """Point this process (and what it starts) at the `mp up` stack of its
    data dir, and return the settings it then reads."""
    env = stack_env(get_settings())
    if env:
        os.environ.update(env)
        get_settings.cache_clear()
    return get_settings()


def checked_children(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The children as recorded, checked now: a child recorded `up` whose
    pid is gone shows `down`; `listening` says whether its port answers."""
    from cli.embedded import port_open

    children = []
    for recorded in state.get("children", []):
        child = dict(recorded)
        if child.get("state") == "up" and not pid_alive(child.get("pid")):
            child["state"] = "down"
        child["listening"] = port_open(child["port"]) if child.get("port") else None
        children.append(child)
    return children


def status_lines(data_dir: Path) -> list[str] | None:
    """`mp status` as lines, or None when no `mp up` runs in this data dir."""
    state = running_state(data_dir)
    if state is None:
        return None
    lines = [f"mp up (pid {state['pid']}), data in {state.get('data_dir', data_dir)}"]
    lines.append(f"  {'NAME':<10}{'PID':>8}  {'STATE':<11}{'RESTARTS':>8}  PORT")
    for child in checked_children(state):
        port = child.get("port")
        where = "" if not port else f"{port}" + ("" if child["listening"] else " (not listening)")
        lines.append(
            f"  {child['name']:<10}{child.get('pid') or '-':>8}  {child['state']:<11}"
            f"{child.get('restarts', 0):>8}  {where}"
        )
    return lines


# -- reaching services ----------------------------------------------------


class ServiceUnreachable(Exception):
    """A service a command needs does not accept connections."""


def _host_port(service: str, settings: Settings) -> tuple[str, int] | None:
    # None: not a TCP address (a Unix socket); the command itself will say.
    if service == "PostgreSQL":
        parts = urlsplit(settings.asyncpg_dsn)
        if not parts.hostname or "host=/" in parts.query:
            return None
        return parts.hostname, parts.port or 5432
    if service == "Redis":
        parts = urlsplit(settings.redis_url)
        if parts.scheme == "unix" or not parts.hostname:
            return None
        return parts.hostname, parts.port or 6379
    host, _, port = settings.temporal_address.rpartition(":")
    return host or "127.0.0.1", int(port or 7233)


def require(settings: Settings, *services: str, timeout: float = 3.0) -> None:
    """Raise ServiceUnreachable naming the first of `services`
    ("PostgreSQL", "Redis", "Temporal") that does not accept a connection."""
    for service in services:
        address = _host_port(service, settings)
        if address is None:
            continue
        host, port = address
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
            hint = " — is `./mp up` running?" if host in ("127.0.0.1", "localhost", "::1") else ""
            raise ServiceUnreachable(f"{service} at {host}:{port} is not reachable: {reason}{hint}") from None


def _connection_failure(exc: BaseException) -> tuple[str, str] | None:
    """(service, reason) when `exc` (or what it wraps) says a service could
    not be reached or refused the connection; None for any other error."""
    import asyncpg
    import redis.exceptions

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        reason = str(current).strip().splitlines()[0] if str(current).strip() else type(current).__name__
        if isinstance(
            current,
            asyncpg.PostgresConnectionError
            | asyncpg.InvalidCatalogNameError
            | asyncpg.InvalidAuthorizationSpecificationError
            | asyncpg.CannotConnectNowError,
        ):
            return "PostgreSQL", reason
        if isinstance(current, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return "Redis", reason
        if isinstance(current, RuntimeError) and reason.startswith("Failed client connect"):
            return "Temporal", reason
        todo.extend([current.__cause__, current.__context__, getattr(current, "orig", None)])
    if isinstance(exc, OSError):
        return "a service", (exc.strerror or str(exc)).lower()
    return None


@contextmanager
def reaching(settings: Settings, *services: str) -> Iterator[None]:
    """Check that `services` accept connections, then run the block; a
    service that cannot be reached, before or during it, is one line on
    stderr and exit code 1 instead of a traceback."""
    try:
        require(settings, *services)
        yield
    except ServiceUnreachable as exc:
        fail(str(exc))
    except Exception as exc:
        failure = _connection_failure(exc)
        if failure is None:
            raise
        fail(f"{failure[0]} failed: {failure[1]}")


def fail(message: str) -> None:
    """One line on stderr and exit code 1."""
    print(f"mp: {message}", file=sys.stderr, flush=True)
    sys.stderr.flush()
    os._exit(1)  # see cli.main._exit: temporalio may crash in interpreter teardown
