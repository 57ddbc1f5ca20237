"""A small HTTP/1.1 keep-alive load generator (asyncio protocols on uvloop).

Each of `concurrency` connections sends one request at a time and waits for
its response, so latency is per request and throughput is what the server
sustains. Request bodies come from a callable, so every request can carry a
fresh messageId. Written against raw protocols to keep the generator's own
CPU cost low: on a small machine it shares the cores with the server and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What a run measured."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    events_acked: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_acked / self.seconds if self.seconds else 0.0


class _Client(asyncio.Protocol):
    """One keep-alive connection sending requests back to back."""

    def __init__(
        self,
        head: bytes,
        body_for: Callable[[], tuple[bytes, int]],
        stop_at: float,
        result: LoadResult,
        done: asyncio.Future,
    ) -> None:
        self.head, self.body_for, self.stop_at, self.result, self.done = head, body_for, stop_at, result, done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        if time.perf_counter() >= self.stop_at:
            self.transport.close()  # type: ignore[union-attr]
            if not self.done.done():
                self.done.set_result(None)
            return
        body, self.events = self.body_for()
        self.started = time.perf_counter()
        self.transport.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        start = head.lower().find(b"content-length:")
        length = (
            int(head[start + 15 : head.find(b"\r\n", start) if head.find(b"\r\n", start) > 0 else None])
            if start >= 0
            else 0
        )
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        status = int(head[9:12])
        result = self.result
        result.requests += 1
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.ok += 1
            result.events_acked += self.events
            result.latencies.append(time.perf_counter() - self.started)
        else:
            result.errors += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_load(
    url: str,
    path: str,
    body_for: Callable[[], tuple[bytes, int]],
    *,
    concurrency: int,
    seconds: float,
    authorization: str | None = None,
    headers: str = "",
) -> LoadResult:
    """Drive `path` with `concurrency` connections for `seconds`; `headers`
    are extra header lines (`Name: value\\r\\n` each)."""
    host, port = url.removeprefix("http://").split(":")
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{auth}{headers}"
        "Content-Length: "
    ).encode()
    loop = asyncio.get_running_loop()
    result = LoadResult()
    started = time.perf_counter()
    stop_at = started + seconds
    waiters = []
    for _ in range(concurrency):
        done = loop.create_future()
        await loop.create_connection(
            lambda d=done: _Client(head, body_for, stop_at, result, d), host, int(port)
        )
        waiters.append(done)
    await asyncio.gather(*waiters)
    result.seconds = time.perf_counter() - started
    return result
