"""Tracking throughput of this tree against another checkout, in one run.

    git worktree add /tmp/mp-before <commit>
    python bench/compare_trees.py /tmp/mp-before --listen [--rounds 6] [--seconds 6]
    git worktree remove --force /tmp/mp-before

`--after PATH` (repeatable) compares other trees instead of this one, all
in the same run (e.g. before, the previous state and the candidate).

Each tree gets its own fresh database, migrated by that tree's own
migrations, a workspace (and with `--listen` a segment reading the
benchmark's event, so every event is announced to a consumer: since the
event backbone, in the outbox by the hot path's statement), and its own
tracking process (`mp tracking`, run from that tree with `PYTHONPATH`
pointing at it; all run on this tree's virtualenv, so library versions are
equal). One bare FastAPI endpoint is the same-run baseline.

Every round drives the bare endpoint, then `/track` on each tree, then
`/track/batch` on each tree, with the same request bodies (same seed) and
the same connections as bench/tracking.py. The trees' order rotates from
round to round (AB, BA, …), so a drift in the machine's load falls on all.
It prints, per round and as medians with their spread, each tree's
events/s over `before`'s (the figure the issue's "within 0.95× of before"
target reads) and the CPU an event cost the tracking process and its
PostgreSQL backends (steadier than events/s on a busy machine). No worker
runs, as in bench/tracking.py: outbox rows are written but not drained.
Finally it counts each database's stored rows against the acknowledged
events.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/email.py would shadow the standard library's `email` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import uuid

import asyncpg
import psutil
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import FAST_UVICORN, drop_database
from bench.loadgen import LoadResult, run_load
from bench.tracking import DEFAULT_SERVER, Bodies, _wait_http, _warm_users
from core.settings import to_asyncpg_dsn
from tests.support.servers import free_port

# Run inside each tree (its own modules and migrations): a migrated
# database with a workspace, and the segment of `--listen`.
SETUP = """
import asyncio, json, sys
from db.engine import create_engine, create_sessionmaker, session_scope
from db.migrate import upgrade
from tests.support.services import create_database
from workspaces.service import create_workspace_keys

async def main(server, prefix, listen):
    url = await create_database(server, prefix)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=1)
    async with session_scope(create_sessionmaker(engine)) as session:
        keys = await create_workspace_keys(session, "bench")
        if listen:
            from segments import service
            from segments.schemas import SegmentCreate
            definition = {"type": "event", "name": "Product Viewed"}
            await service.create_segment(
                session, keys.workspace_id, SegmentCreate(name="Viewers", definition=definition))
    await engine.dispose()
    print(json.dumps({"url": url, "key": keys.public_key, "workspace": str(keys.workspace_id)}))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "1"))
"""


class Tree:
    """One checkout under test: its database, key and tracking process."""

    def __init__(self, label: str, path: Path) -> None:
        self.label = label
        self.path = path
        self.env = {**os.environ, "PYTHONPATH": str(path)}
        self.url = self.key = self.workspace = ""
        self.proc: subprocess.Popen | None = None
        self.http = ""
        self.acked = 0
        self.bodies: Bodies | None = None

    def setup(self, server: str, listen: bool) -> None:
        out = subprocess.run(
            [sys.executable, "-c", SETUP, server, f"mp_bench_{self.label}", "1" if listen else "0"],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(out.stdout.strip().splitlines()[-1])
        self.url, self.key, self.workspace = found["url"], found["key"], found["workspace"]

    def start(self) -> None:
        port = free_port()
        env = {
            **self.env,
            "DATABASE_URL": self.url,
            "TRACKING_PORT": str(port),
            "HOST": "127.0.0.1",
            "REDIS_PREFIX": f"mp_bench_{uuid.uuid4().hex[:6]}:",
            "SECRET_KEY": secrets.token_urlsafe(32),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "tracking"],
            cwd=self.path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.http = f"http://127.0.0.1:{port}"

    async def stored(self) -> int:
        conn = await asyncpg.connect(to_asyncpg_dsn(self.url))
        try:
            return await conn.fetchval("SELECT count(*) FROM events WHERE type = 'track'")
        finally:
            await conn.close()

    async def _cpu_seconds(self) -> float:
        """CPU time of the tracking process and of its PostgreSQL backends:
        unlike events/s, barely moved by other work on the machine."""
        conn = await asyncpg.connect(to_asyncpg_dsn(self.url))
        try:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        total = 0.0
        assert self.proc is not None
        for pid in [self.proc.pid, *(r[0] for r in pids)]:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    async def load(self, path: str, args: argparse.Namespace) -> tuple[LoadResult, float]:
        """Drive one endpoint; returns the result and CPU microseconds per event."""
        assert self.bodies is not None
        batch = path.endswith("batch")
        started = await self._cpu_seconds()
        result = await run_load(
            self.http,
            path,
            self.bodies.batch if batch else self.bodies.track,
            concurrency=args.batch_connections if batch else args.track_connections,
            seconds=args.seconds,
            authorization=f"Bearer {self.key}",
        )
        cpu = await self._cpu_seconds() - started
        self.acked += result.events_acked
        return result, cpu * 1e6 / max(result.events_acked, 1)


def _spawn_bare(port: int) -> subprocess.Popen:
    args = ["-m", "uvicorn", "bench.bare_app:app", "--port", str(port), "--host", "127.0.0.1", *FAST_UVICORN]
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}x (min {min(values):.3f}, max {max(values):.3f})"


def _round_line(one: dict, afters: list[Tree]) -> str:
    parts = [f"bare {one['bare_rps']:,.0f} req/s"]
    for key, name in (("track", "/track"), ("batch", "/track/batch")):
        figures = " / ".join(f"{one[f'{key}_{t.label}']:,.0f}" for t in afters)
        ratios = " / ".join(f"{one[f'{key}_{t.label}_ratio']:.3f}x" for t in afters)
        cpu = " / ".join(f"{one[f'{key}_{t.label}_cpu_us']:.0f}" for t in afters)
        parts.append(
            f"{name} {one[f'{key}_before']:,.0f} -> {figures} ev/s ({ratios}), "
            f"CPU {one[f'{key}_before_cpu_us']:.0f} -> {cpu} us/event"
        )
    return "; ".join(parts)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path, help="the other checkout (e.g. a worktree of the old commit)")
    parser.add_argument(
        "--after",
        type=Path,
        action="append",
        help="a tree under test (default: this one); repeat it to compare several with `before` in one run",
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each measured phase")
    parser.add_argument("--rounds", type=int, default=6, help="rounds; the trees' order rotates")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--track-connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--listen", action="store_true", help="a segment reads the event in every tree")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_SERVER", DEFAULT_SERVER))
    parser.add_argument("--json", dest="json_out", help="also write per-round figures to this file")
    args = parser.parse_args()

    after_paths = args.after or [ROOT]
    afters = [
        Tree("after" if len(after_paths) == 1 else f"after{n + 1}", path.resolve())
        for n, path in enumerate(after_paths)
    ]
    before = Tree("before", args.before.resolve())
    trees = [before, *afters]
    print("preparing databases...", flush=True)
    for tree in trees:
        await asyncio.to_thread(tree.setup, args.server, args.listen)
    bare_port = free_port()
    bare = _spawn_bare(bare_port)
    bare_url = f"http://127.0.0.1:{bare_port}"
    rounds: list[dict] = []
    try:
        for tree in trees:
            tree.start()
        await _wait_http(bare_url, bare)
        for tree in trees:
            assert tree.proc is not None
            await _wait_http(tree.http, tree.proc)
            print(f"warming {args.users:,} users in {tree.label} ({tree.path})...", flush=True)
            await _warm_users(tree.http, tree.key, args.users)
            tree.bodies = Bodies(args.users)
            tree.acked = 0
        bare_bodies = Bodies(args.users)
        for n in range(args.rounds):
            # Rotate the order (AB, BA, … or ABC, BCA, CAB, …) so that drift
            # in the machine's load falls on every tree alike.
            order = trees[n % len(trees) :] + trees[: n % len(trees)]
            one: dict = {"order": [t.label for t in order]}
            one["bare_rps"] = (
                await run_load(
                    bare_url,
                    "/track",
                    bare_bodies.track,
                    concurrency=args.track_connections,
                    seconds=args.seconds,
                )
            ).requests_per_second
            for path, key in (("/track", "track"), ("/track/batch", "batch")):
                for tree in order:
                    res, cpu = await tree.load(path, args)
                    one[f"{key}_{tree.label}"] = res.events_per_second
                    one[f"{key}_{tree.label}_cpu_us"] = cpu
                    one[f"{key}_{tree.label}_p99"] = res.percentile(99)
                    one[f"{key}_{tree.label}_errors"] = res.errors
                for tree in afters:
                    one[f"{key}_{tree.label}_ratio"] = one[f"{key}_{tree.label}"] / one[f"{key}_before"]
                    one[f"{key}_{tree.label}_cpu_ratio"] = (
                        one[f"{key}_{tree.label}_cpu_us"] / one[f"{key}_before_cpu_us"]
                    )
            rounds.append(one)
            print(
                f"round {n + 1}/{args.rounds} ({', '.join(one['order'])}): {_round_line(one, afters)}",
                flush=True,
            )
        stored = {tree.label: await tree.stored() for tree in trees}
    finally:
        for proc in [bare, *(t.proc for t in trees if t.proc is not None)]:
            proc.terminate()
            proc.wait(10)
        for tree in trees:
            if tree.url:
                await drop_database(args.server, tree.url)

    print()
    print(
        f"over before ({before.path}): {os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds:.0f}s "
        f"phases, listener {'on' if args.listen else 'off'}"
    )
    for key, name in (("track", "/track"), ("batch", "/track/batch")):
        base = statistics.median(r[f"{key}_before"] for r in rounds)
        base_cpu = statistics.median(r[f"{key}_before_cpu_us"] for r in rounds)
        print(f"  {name}: before {base:,.0f} ev/s, {base_cpu:.1f} us CPU an event (medians)")
        for tree in afters:
            ratios = [r[f"{key}_{tree.label}_ratio"] for r in rounds]
            cpu = [r[f"{key}_{tree.label}_cpu_ratio"] for r in rounds]
            print(
                f"    {tree.label} ({tree.path}): events/s {_spread(ratios)} of before "
                f"(rounds {', '.join(f'{x:.3f}' for x in ratios)}); "
                f"CPU an event (server + its PostgreSQL backends) {_spread(cpu)}"
            )
    print(f"  bare endpoint {statistics.median(r['bare_rps'] for r in rounds):,.0f} req/s (median)")
    for tree in trees:
        # Warm-up identifies are not track events; every acknowledged track event must be stored.
        verdict = "nothing lost" if stored[tree.label] >= tree.acked else "LOST EVENTS"
        print(f"  {tree.label}: acknowledged {tree.acked:,} events, stored {stored[tree.label]:,}: {verdict}")
    if args.json_out:
        await asyncio.to_thread(Path(args.json_out).write_text, json.dumps(rounds, indent=2))


if __name__ == "__main__":
    uvloop.run(main())
    sys.stdout.flush()
    os._exit(0)
