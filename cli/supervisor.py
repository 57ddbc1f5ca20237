"""Keeps `mp up`'s children running.

A child that exits is started again after a backoff (1 s, 2 s, 4 s, ...
capped), with a line naming it and its exit code. The services and apps
already reconnect by themselves (connection pools, Redis and Temporal
clients retry), so restarting the one that died is enough. A child that
keeps crashing (`max_crashes` within `window` seconds) is not restarted:
`CrashLoop` is raised and `mp up` stops everything with a non-zero exit.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cli.embedded import Child


class CrashLoop(Exception):
    """A child crashed too often to keep restarting it."""

    def __init__(self, supervised: Supervised, message: str) -> None:
        super().__init__(message)
        self.supervised = supervised


@dataclass
class Supervised:
    """One child with its restart bookkeeping."""

    child: Child
    port: int | None = None
    state: str = "up"  # up | restarting | down
    restarts: int = 0
    last_exit: int | None = None
    restart_at: float = 0.0
    crashes: deque[float] = field(default_factory=deque)

    @property
    def name(self) -> str:
        """The child's name (postgres, redis, temporal, worker, api, tracking)."""
        return self.child.name

    def status(self) -> dict[str, Any]:
        """What `mp status` shows of this child."""
        proc = self.child.proc
        return {
            "name": self.name,
            "pid": proc.pid if proc is not None and self.state == "up" else None,
            "state": self.state,
            "restarts": self.restarts,
            "port": self.port,
            "last_exit": self.last_exit,
        }


def describe_exit(code: int | None) -> str:
    """'code 3', or 'code -9, killed by SIGKILL' for a signal."""
    if code is None:
        return "code unknown"
    if code < 0:
        try:
            return f"code {code}, killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"code {code}"


class Supervisor:
    """Restarts crashed children with backoff; `poll` is called every few
    hundred milliseconds from `mp up`'s main loop."""

    def __init__(
        self,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        max_crashes: int = 5,
        window: float = 60.0,
        log: Any = print,
    ) -> None:
        self.children: list[Supervised] = []
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_crashes = max_crashes
        self._window = window
        self._log = log

    def add(self, child: Child, port: int | None = None) -> Supervised:
        """Supervise a started child."""
        supervised = Supervised(child, port)
        self.children.append(supervised)
        return supervised

    def poll(self, now: float | None = None) -> bool:
        """Notice exits and start children whose backoff has passed; True
        when anything changed. Raises CrashLoop."""
        now = time.monotonic() if now is None else now
        changed = False
        for s in self.children:
            if s.state == "up" and not s.child.alive():
                changed = True
                self._crashed(s, now)
            elif s.state == "restarting" and now >= s.restart_at:
                changed = True
                s.child.start()
                s.restarts += 1
                s.state = "up"
                assert s.child.proc is not None
                self._log(f"mp up: {s.name} restarted (pid {s.child.proc.pid}, restart {s.restarts})")
        return changed

    def _crashed(self, s: Supervised, now: float) -> None:
        assert s.child.proc is not None
        s.last_exit = s.child.proc.returncode
        s.crashes.append(now)
        while s.crashes and s.crashes[0] < now - self._window:
            s.crashes.popleft()
        if len(s.crashes) >= self._max_crashes:
            s.state = "down"
            raise CrashLoop(
                s,
                f"{s.name} exited ({describe_exit(s.last_exit)}) and crashed {len(s.crashes)} times "
                f"within {self._window:.0f}s; stopping everything",
            )
        delay = min(self._cap, self._base * 2 ** (len(s.crashes) - 1))
        s.state = "restarting"
        s.restart_at = now + delay
        self._log(f"mp up: {s.name} exited ({describe_exit(s.last_exit)}); restarting in {delay:g}s")

    def status(self) -> list[dict[str, Any]]:
        """Every child's status, in start order."""
        return [s.status() for s in self.children]
