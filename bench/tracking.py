"""Tracking throughput against its raw ceilings, in one run.

    python bench/tracking.py [--seconds 10] [--users 10000]

Starts, each as its own process: the tracking API (`mp tracking`) on a
fresh database, and a bare FastAPI endpoint answering 202. This process
then drives them over HTTP and prints events/s and p99 for `/track` (one
event a request), `/track/batch` (100 events a request) and Segment's
`/v1/batch` (the same 100 events as Segment's server libraries send them:
gzip body, Basic auth, a `sentAt`), beside the bare endpoint and an asyncpg
COPY of the same rows into the same `events` table.
Finally it counts stored rows: every acknowledged event must be there.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/email.py would shadow the standard library's `email` package:
# keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import base64
import gzip
import json
import os
import random
import secrets
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import FAST_UVICORN, drop_database, fresh_database
from bench.loadgen import LoadResult, run_load
from core.settings import to_asyncpg_dsn
from tests.support.servers import free_port

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH_SIZE = 100


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                await client.get(url + "/health")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not start")


def prepared(make: Callable[[], tuple[bytes, int]], count: int) -> Callable[[], tuple[bytes, int]]:
    """`count` bodies made now and handed out in turn; more are made on demand."""
    ready = [make() for _ in range(count)]
    ready.reverse()
    return lambda: ready.pop() if ready else make()


class Bodies:
    """Request bodies with fresh messageIds over a fixed population of users."""

    def __init__(self, users: int) -> None:
        self.users = users
        self.rng = random.Random(7)
        self.now = datetime.now(UTC)
        self.counter = 0

    def _event(self) -> str:
        self.counter += 1
        user = self.rng.randrange(self.users)
        ts = (self.now - timedelta(seconds=self.counter % 86400)).isoformat()
        return (
            f'{{"userId":"bench_{user}","event":"Product Viewed",'
            f'"messageId":"m{self.counter}-{uuid.uuid4().hex[:8]}",'
            f'"timestamp":"{ts}","properties":{{"product_id":"sku_{user % 500}","price":{user % 300}.5,'
            f'"currency":"USD"}},"context":{{"library":{{"name":"bench"}}}}}}'
        )

    def track(self) -> tuple[bytes, int]:
        return self._event().encode(), 1

    def batch(self) -> tuple[bytes, int]:
        return ('{"batch":[' + ",".join(self._event() for _ in range(BATCH_SIZE)) + "]}").encode(), BATCH_SIZE

    def segment_batch(self) -> tuple[bytes, int]:
        """The same events as Segment's server libraries post them to /v1/batch:
        typed calls, a batch `sentAt`, gzip (level 6, zlib's default)."""
        sent = datetime.now(UTC).isoformat()
        calls = ",".join('{"type":"track",' + self._event()[1:] for _ in range(BATCH_SIZE))
        return gzip.compress(f'{{"batch":[{calls}],"sentAt":"{sent}"}}'.encode(), 6), BATCH_SIZE


async def _keys(database_url: str, listen: bool) -> tuple[uuid.UUID, str]:
    from db.engine import create_engine, create_sessionmaker, session_scope
    from workspaces.service import create_workspace_keys

    engine = create_engine(database_url, pool_size=1)
    async with session_scope(create_sessionmaker(engine)) as session:
        keys = await create_workspace_keys(session, "bench")
        if listen:
            # A segment that reads the benchmark's event: every stored event
            # is announced to a consumer (an outbox row in the same statement).
            from segments import service as segments
            from segments.schemas import SegmentCreate

            definition = {"type": "event", "name": "Product Viewed"}
            await segments.create_segment(
                session, keys.workspace_id, SegmentCreate(name="Viewers", definition=definition)
            )
    await engine.dispose()
    return keys.workspace_id, keys.public_key


async def _warm_users(url: str, key: str, users: int) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for start in range(0, users, 1000):
            batch = [
                {"type": "identify", "userId": f"bench_{n}", "traits": {"plan": "free"}}
                for n in range(start, min(users, start + 1000))
            ]
            r = await client.post("/track/batch", json={"batch": batch})
            r.raise_for_status()


async def _copy_ceiling(
    database_url: str,
    workspace_id: uuid.UUID,
    profile_ids: list[uuid.UUID],
    seconds: float,
    chunk: int = 1000,
    connections: int = 2,
) -> tuple[float, int]:
    """Rows/s that asyncpg COPY reaches into the same partitioned table."""
    from core.ids import uuid7

    now = datetime.now(UTC)
    props = json.dumps({"product_id": "sku_1", "price": 10.5, "currency": "USD"})
    ctx = json.dumps({"library": {"name": "bench"}})
    total = 0

    async def _worker(n: int) -> None:
        nonlocal total
        conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
        rng = random.Random(n)
        stop_at = time.perf_counter() + seconds
        counter = 0
        while time.perf_counter() < stop_at:
            rows = []
            for _ in range(chunk):
                counter += 1
                rows.append(
                    (
                        uuid7(),
                        workspace_id,
                        rng.choice(profile_ids),
                        "track",
                        "Product Viewed",
                        props,
                        ctx,
                        now - timedelta(seconds=counter % 86400),
                        now,
                        f"copy-{n}-{counter}",
                    )
                )
            await conn.copy_records_to_table(
                "events",
                records=rows,
                columns=[
                    "id",
                    "workspace_id",
                    "profile_id",
                    "type",
                    "name",
                    "properties",
                    "context",
                    "occurred_at",
                    "received_at",
                    "message_id",
                ],
            )
            total += chunk
        await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(_worker(n) for n in range(connections)))
    return total / (time.perf_counter() - started), total


class CpuMeter:
    """CPU seconds used by the server under test, PostgreSQL and this
    load-generating process during a phase (to see where time goes)."""

    def __init__(self, server_pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.server = psutil.Process(server_pid)
        self.me = psutil.Process()

    def _pg(self) -> float:
        total = 0.0
        for proc in self._psutil.process_iter(["name", "cpu_times"]):
            if proc.info["name"] and proc.info["name"].startswith("postgres") and proc.info["cpu_times"]:
                total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
        return total

    def _read(self) -> tuple[float, float, float]:
        s, m = self.server.cpu_times(), self.me.cpu_times()
        return s.user + s.system, self._pg(), m.user + m.system

    def __enter__(self) -> CpuMeter:
        self.start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        self.server_s, self.pg_s, self.client_s = (b - a for a, b in zip(self.start, end, strict=True))

    def per_unit(self, units: int) -> str:
        us = 1e6 / max(units, 1)
        return (
            f"CPU per unit: server {self.server_s * us:6.1f} us, postgres {self.pg_s * us:6.1f} us, "
            f"load generator {self.client_s * us:6.1f} us"
        )


async def _stats(url: str) -> dict:
    import httpx

    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/health")).json()


def _line(name: str, res: LoadResult) -> str:
    return (
        f"  {name:<34} {res.events_per_second:>10,.0f} events/s   {res.requests_per_second:>8,.0f} req/s   "
        f"p50 {res.percentile(50):6.1f} ms   p99 {res.percentile(99):6.1f} ms   errors {res.errors}"
    )


async def _round(
    args: argparse.Namespace,
    urls: dict[str, str],
    procs: dict[str, subprocess.Popen],
    auth: str,
    bodies: Bodies,
    round_no: int = 0,
) -> dict:
    """One pass of the three HTTP phases; returns results, CPU meters and group stats."""
    out: dict = {"results": {}, "cpu": {}}
    with CpuMeter(procs["bare"].pid) as meter:
        out["results"]["bare"] = await run_load(
            urls["bare"], "/track", bodies.track, concurrency=args.track_connections, seconds=args.seconds
        )
    out["cpu"]["bare"] = (meter, out["results"]["bare"].requests)
    spy = None
    if args.profile:
        fmt = "speedscope" if args.profile.endswith(".json") else "flamegraph"
        spy = await asyncio.create_subprocess_exec(
            "py-spy",
            "record",
            "-o",
            args.profile,
            "--pid",
            str(procs["tracking"].pid),
            "--duration",
            str(int(args.seconds)),
            "--format",
            fmt,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    before = await _stats(urls["tracking"])
    with CpuMeter(procs["tracking"].pid) as meter:
        out["results"]["track"] = await run_load(
            urls["tracking"],
            "/track",
            bodies.track,
            concurrency=args.track_connections,
            seconds=args.seconds,
            authorization=auth,
        )
    out["cpu"]["track"] = (meter, out["results"]["track"].events_acked)
    after = await _stats(urls["tracking"])
    groups = max(after["groups_committed"] - before["groups_committed"], 1)
    out["group_size"] = (after["requests_committed"] - before["requests_committed"]) / groups
    out["group_ms"] = (after["commit_seconds"] - before["commit_seconds"]) * 1000 / groups
    if spy is not None:
        await asyncio.wait_for(spy.wait(), 30)

    # Both batch phases send bodies made before the phase starts (fresh
    # messageIds each): gzip costs the load generator ~3 us an event, which
    # on a small machine would be taken from the server under test.
    async def plain_batch() -> LoadResult:
        return await run_load(
            urls["tracking"],
            "/track/batch",
            prepared(bodies.batch, args.prepared_bodies),
            concurrency=args.batch_connections,
            seconds=args.seconds,
            authorization=auth,
        )

    async def segment_batch() -> LoadResult:
        return await run_load(
            urls["tracking"],
            "/v1/batch",
            prepared(bodies.segment_batch, args.prepared_bodies),
            concurrency=args.batch_connections,
            seconds=args.seconds,
            authorization="Basic " + base64.b64encode(f"{auth.split()[-1]}:".encode()).decode(),
            headers="Content-Encoding: gzip\r\n",
        )

    # The two batch phases swap places every round: the events table grows
    # as a run goes on, which would otherwise favour whichever runs first.
    phases = [("batch", plain_batch), ("v1batch", segment_batch)]
    for name, phase in phases if round_no % 2 == 0 else phases[::-1]:
        with CpuMeter(procs["tracking"].pid) as meter:
            out["results"][name] = await phase()
        out["cpu"][name] = (meter, out["results"][name].events_acked)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each measured phase")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all phases; medians are reported")
    parser.add_argument("--users", type=int, default=10_000, help="distinct userIds events are spread over")
    parser.add_argument("--track-connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument(
        "--prepared-bodies", type=int, default=1000, help="batch bodies made before each batch phase"
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("BENCH_DATABASE_SERVER", DEFAULT_SERVER),
        help="PostgreSQL server URL (a fresh database is created on it)",
    )
    parser.add_argument("--json", dest="json_out", help="also write the figures to this file")
    parser.add_argument(
        "--listen",
        action="store_true",
        help="a segment reads the benchmark's event, so every event is announced in the outbox",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the tracking server with py-spy during /track (.json: speedscope, else svg)",
    )
    args = parser.parse_args()

    print("preparing database...", flush=True)
    database_url = await fresh_database(args.server, "mp_bench_tracking")
    workspace_id, key = await _keys(database_url, args.listen)
    tracking_port, bare_port = free_port(), free_port()
    env = {
        "DATABASE_URL": database_url,
        "TRACKING_PORT": str(tracking_port),
        "HOST": "127.0.0.1",
        "REDIS_PREFIX": f"mp_bench_{uuid.uuid4().hex[:6]}:",
        "SECRET_KEY": secrets.token_urlsafe(32),  # `mp tracking` refuses the development key
    }
    procs = {
        "tracking": _spawn([sys.executable, "-m", "cli", "tracking"], env),
        "bare": _spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_app:app",
                "--port",
                str(bare_port),
                "--host",
                "127.0.0.1",
                *FAST_UVICORN,
            ],
            {},
        ),
    }
    urls = {"tracking": f"http://127.0.0.1:{tracking_port}", "bare": f"http://127.0.0.1:{bare_port}"}
    rounds: list[dict] = []
    try:
        await _wait_http(urls["tracking"], procs["tracking"])
        await _wait_http(urls["bare"], procs["bare"])
        print(f"warming {args.users:,} users...", flush=True)
        await _warm_users(urls["tracking"], key, args.users)
        bodies = Bodies(args.users)
        conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
        profile_ids = [
            r[0] for r in await conn.fetch("SELECT id FROM profiles WHERE workspace_id = $1", workspace_id)
        ]
        acked = stored = 0
        for n in range(args.rounds):
            print(
                f"round {n + 1}/{args.rounds}: bare, /track, /track/batch and /v1/batch (gzip), COPY "
                f"({args.seconds:.0f}s each)...",
                flush=True,
            )
            before = await conn.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1", workspace_id)
            one = await _round(args, urls, procs, f"Bearer {key}", bodies, n)
            after = await conn.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1", workspace_id)
            acked += sum(one["results"][phase].events_acked for phase in ("track", "batch", "v1batch"))
            stored += after - before
            one["copy_rate"], _ = await _copy_ceiling(database_url, workspace_id, profile_ids, args.seconds)
            one["track_ratio"] = (
                one["results"]["track"].events_per_second / one["results"]["bare"].requests_per_second
            )
            one["batch_ratio"] = one["results"]["batch"].events_per_second / one["copy_rate"]
            one["segment_ratio"] = (
                one["results"]["v1batch"].events_per_second / one["results"]["batch"].events_per_second
            )
            rounds.append(one)
            print(
                f"  /track {one['track_ratio']:.2f}x bare, /track/batch {one['batch_ratio']:.2f}x COPY, "
                f"/v1/batch gzip {one['segment_ratio']:.2f}x /track/batch",
                flush=True,
            )
        await conn.close()
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
        await drop_database(args.server, database_url)

    # The median round by /track ratio is reported in full.
    rounds.sort(key=lambda r: r["track_ratio"])
    mid = rounds[len(rounds) // 2]
    batch_ratio = statistics.median(r["batch_ratio"] for r in rounds)
    segment_ratio = statistics.median(r["segment_ratio"] for r in rounds)
    results = mid["results"]
    print()
    print(
        f"tracking benchmark — {os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds:.0f}s phases, "
        f"{args.users:,} users (median round shown)"
    )
    print(_line("bare FastAPI endpoint (202)", results["bare"]).replace("events/s", "req   /s"))
    print(_line("POST /track (1 event)", results["track"]))
    print(_line(f"POST /track/batch ({BATCH_SIZE} events)", results["batch"]))
    print(_line(f"POST /v1/batch ({BATCH_SIZE}, gzip)", results["v1batch"]))
    print(f"  {'asyncpg COPY (1,000-row chunks, 2 conns)':<34} {mid['copy_rate']:>10,.0f} rows/s")
    print()
    # Nested f-strings use the other quote: re-using the outer one is 3.12-only syntax.
    track_rounds = ", ".join(f"{r['track_ratio']:.2f}" for r in rounds)
    batch_rounds = ", ".join(f"{ratio:.2f}" for ratio in sorted(r["batch_ratio"] for r in rounds))
    print(
        f"  /track       / bare endpoint : {mid['track_ratio']:5.2f}x   "
        f"(target >= 0.80; rounds {track_rounds})"
    )
    print(f"  /track/batch / raw COPY      : {batch_ratio:5.2f}x   (target >= 0.30; rounds {batch_rounds})")
    segment_rounds = ", ".join(f"{ratio:.2f}" for ratio in sorted(r["segment_ratio"] for r in rounds))
    print(
        f"  /v1/batch gzip / /track/batch: {segment_ratio:5.2f}x   (target >= 0.90; rounds {segment_rounds})"
    )
    print(
        f"  /track: {mid['group_size']:.1f} requests per group commit on average, "
        f"{mid['group_ms']:.2f} ms a commit"
    )
    for name, (meter, units) in mid["cpu"].items():
        print(f"  {name:<6} {meter.per_unit(units)}")
    verdict = "nothing lost" if stored >= acked else f"LOST {acked - stored:,}"
    print(f"  all rounds: acknowledged {acked:,} events, stored {stored:,}: {verdict}")
    figures = {
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "users": args.users,
        "bare_rps": results["bare"].requests_per_second,
        "track_eps": results["track"].events_per_second,
        "track_p99_ms": results["track"].percentile(99),
        "batch_eps": results["batch"].events_per_second,
        "batch_p99_ms": results["batch"].percentile(99),
        "v1_batch_gzip_eps": results["v1batch"].events_per_second,
        "v1_batch_gzip_p99_ms": results["v1batch"].percentile(99),
        "v1_batch_gzip_ratio": segment_ratio,
        "copy_rows_per_s": mid["copy_rate"],
        "track_ratio": mid["track_ratio"],
        "batch_ratio": batch_ratio,
        "acked": acked,
        "stored": stored,
    }
    if args.json_out:
        await asyncio.to_thread(Path(args.json_out).write_text, json.dumps(figures, indent=2))


if __name__ == "__main__":
    uvloop.run(main())
    sys.stdout.flush()
    os._exit(0)
