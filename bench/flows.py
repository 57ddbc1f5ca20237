"""Automation flows against their raw baselines, in one run.

    python bench/flows.py [--enrollments 1000] [--waiting 10000] [--temporal-file]

Starts, each as its own process: a Temporal dev server (in memory as in
the tests, or persisting to a SQLite file as `mp up` runs it with
`--temporal-file`), the tracking API (`mp tracking`) and the worker (`mp
worker`) on a fresh database, and for the baseline a bare worker that
runs one trivial workflow. This process then measures:

1. Enrollment rate: N `/track` events that each trigger an enrollment,
   beside N raw `signal_with_start` calls of a trivial workflow on the
   same server, each timed to two ends reached alike on both sides: (1)
   every signal-with-start returned (for the flows, each enrollment's row
   written too: the outbox is empty), (2) every run's first workflow task
   done (the trivial run completed; the flow run at its first node, its
   `FlowStep` search attribute set).
2. Event → workflow latency: with N enrollments waiting for an event,
   `/track` of that event for a sample of them; from the 2xx to the run's
   next step (its `flow_steps.entered_at`, written by the step the run
   schedules once it has seen the event): p50 and p99.
3. Cost of waiting: RSS of the worker and of the Temporal server before
   any enrollment and with `--waiting` enrollments waiting.
4. The hot path: `/track` throughput in a workspace with 10 active flows
   whose trigger events are 10% of its events, beside a workspace with no
   flows and the same event mix (the worker is stopped for this phase, so
   only the request path is compared, not the machine's spare CPU).

Timings are never asserted; read docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/email.py would shadow the standard library's `email` package:
# keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time
import uuid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio import workflow

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
TRIGGER = "Bench Enrolled"
PING = "Bench Ping"
HOT_TRIGGERS = [f"Bench Trigger {k}" for k in range(10)]


@workflow.defn(name="BenchTrivialWorkflow", sandboxed=False)
class BenchTrivialWorkflow:
    """The baseline: started by a signal-with-start, ends once it has the signal."""

    def __init__(self) -> None:
        self._signalled = False

    @workflow.signal(name="go")
    def go(self, _arg: str) -> None:
        self._signalled = True

    @workflow.run
    async def run(self, _arg: str) -> None:
        await workflow.wait_condition(lambda: self._signalled)


async def _trivial_worker(address: str, queue: str) -> None:
    """Process body of the baseline worker (`--trivial-worker`)."""
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    print("trivial worker polling", flush=True)
    async with Worker(client, task_queue=queue, workflows=[BenchTrivialWorkflow]):
        await asyncio.Event().wait()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


async def _until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = await predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f}s")
        await asyncio.sleep(interval)


def _logged(log: Path, marker: str) -> bool:
    return log.exists() and marker in log.read_text(errors="replace")


def _rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


class Cpu:
    """CPU seconds each process spent between two readings: where an
    enrollment's time goes (PostgreSQL's backends come and go with pools,
    so they are left out)."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def read(self) -> dict[str, float]:
        out = {}
        for name, proc in self._procs.items():
            times = proc.cpu_times()
            out[name] = times.user + times.system
        return out

    @staticmethod
    def per_unit(before: dict[str, float], after: dict[str, float], units: int) -> str:
        return ", ".join(f"{k} {(after[k] - before[k]) * 1000 / units:.1f}" for k in before)


def _size_mb(folder: Path, pattern: str) -> float:
    return sum(p.stat().st_size for p in folder.glob(pattern)) / 2**20


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


class Tracker:
    """Sends tracking calls for one workspace with a fixed number in flight."""

    def __init__(self, url: str, key: str, concurrency: int = 16) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=concurrency),
        )
        self.gate = asyncio.Semaphore(concurrency)

    async def track(self, user: str, event: str) -> float:
        """One `/track`; returns the wall-clock time of its 2xx."""
        async with self.gate:
            r = await self.client.post("/track", json={"userId": user, "event": event})
        r.raise_for_status()
        return time.time()

    async def batch(self, users: list[str], event: str) -> None:
        for start in range(0, len(users), 500):
            body = {
                "batch": [{"type": "track", "userId": u, "event": event} for u in users[start : start + 500]]
            }
            (await self.client.post("/track/batch", json=body)).raise_for_status()

    async def close(self) -> None:
        await self.client.aclose()


def _waiting_flow() -> dict:
    """Enrolled by TRIGGER, waits (up to a day) for PING, then records `seen`."""
    return {
        "trigger": {"type": "event", "name": TRIGGER},
        "start": "await",
        "nodes": [
            {
                "id": "await",
                "type": "wait_for_event",
                "name": PING,
                "timeout_seconds": 86400,
                "on_event": "seen",
            },
            {"id": "seen", "type": "exit"},
        ],
    }


async def _count(conn, sql: str, *params) -> int:
    return await conn.fetchval(sql, *params)


class WorkflowTasks:
    """Workflow tasks completed at the dev server (its Prometheus metrics),
    whoever ran them: the same count ends both halves of a rate round.
    The platform's scheduled workflows add a few tasks a minute."""

    METRIC = (
        'service_requests{namespace="default",operation="RespondWorkflowTaskCompleted",'
        'service_name="frontend"}'
    )

    def __init__(self, metrics_url: str) -> None:
        import httpx

        self.http = httpx.AsyncClient(timeout=10)
        self.url = metrics_url

    async def completed(self) -> int:
        for line in (await self.http.get(self.url)).text.splitlines():
            if line.startswith(self.METRIC + " "):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    async def until(self, count: int, what: str) -> None:
        async def reached():
            return await self.completed() >= count

        await _until(reached, 1800, what, interval=0.1)


async def enrollment_round(
    tracker: Tracker,
    conn,
    tasks: WorkflowTasks,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    users: list[str],
    already: int,
) -> tuple[float, float]:
    """Enrollments/s from the first `/track` to (1) every enrollment
    recorded and its run started (its row written and the dispatcher's
    signal-with-start returned: the outbox is empty) and (2) every run at
    its first node (as many more workflow tasks completed at the server)."""
    done_before = await tasks.completed()
    started = time.perf_counter()
    await asyncio.gather(*(tracker.track(u, TRIGGER) for u in users))
    target = already + len(users)

    async def recorded_and_started():
        if await _count(conn, "SELECT count(*) FROM outbox WHERE workspace_id = $1", workspace_id):
            return False
        rows = await _count(conn, "SELECT count(*) FROM flow_enrollments WHERE flow_id = $1", flow_id)
        return rows >= target

    await _until(recorded_and_started, 1800, "the enrollments", interval=0.02)
    runs_started = time.perf_counter() - started
    await tasks.until(done_before + len(users), "runs at their first node")
    return len(users) / runs_started, len(users) / (time.perf_counter() - started)


async def baseline_round(
    client, tasks: WorkflowTasks, queue: str, n: int, concurrency: int
) -> tuple[float, float]:
    """Raw signal-with-starts/s of `n` trivial runs, as many in flight as
    the dispatcher allows: (1) until every call returned, (2) until every
    run completed (its first and only workflow task done)."""
    run = uuid.uuid4().hex[:8]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await client.start_workflow(
                "BenchTrivialWorkflow",
                "x",
                id=f"bench-trivial-{run}-{i}",
                task_queue=queue,
                start_signal="go",
                start_signal_args=["x"],
            )

    done_before = await tasks.completed()
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    returned = time.perf_counter() - started
    await tasks.until(done_before + n, "trivial runs")
    return n / returned, n / (time.perf_counter() - started)


async def latency_phase(
    tracker: Tracker, conn, flow_id: uuid.UUID, users: list[str], pace: float
) -> list[float]:
    """Milliseconds from each PING's 2xx to its run's next step."""
    acked: dict[str, float] = {}

    async def ping(user: str, delay: float) -> None:
        await asyncio.sleep(delay)
        acked[user] = await tracker.track(user, PING)

    await asyncio.gather(*(ping(u, i / pace) for i, u in enumerate(users)))
    sql = """
        SELECT p.external_id, extract(epoch FROM s.entered_at)
        FROM flow_steps s JOIN flow_enrollments e ON e.id = s.enrollment_id
        JOIN profiles p ON p.id = e.profile_id
        WHERE s.flow_id = $1 AND s.node_id = 'seen' AND p.external_id = ANY($2::text[])"""

    async def all_seen():
        rows = await conn.fetch(sql, flow_id, users)
        return rows if len(rows) == len(users) else None

    rows = await _until(all_seen, 120, "pings seen")
    return [(float(at) - acked[user]) * 1000 for user, at in rows]


class HotBodies:
    """`/track` bodies over a fixed population; 10% carry one of the ten
    flow trigger names, the rest a name no flow listens for."""

    def __init__(self, users: int, seed: int) -> None:
        self.users = users
        self.rng = random.Random(seed)
        self.counter = 0

    def track(self) -> tuple[bytes, int]:
        self.counter += 1
        user = self.rng.randrange(self.users)
        # Every tenth event triggers a flow, the ten flows in turn.
        name = HOT_TRIGGERS[(self.counter // 10) % 10] if self.counter % 10 == 0 else "Product Viewed"
        body = (
            f'{{"userId":"hot_{user}","event":"{name}","messageId":"h{self.counter}-{uuid.uuid4().hex[:8]}",'
            f'"properties":{{"product_id":"sku_{user % 500}","price":{user % 300}.5}}}}'
        )
        return body.encode(), 1


def _load_line(res) -> str:
    return (
        f"{res.events_per_second:8,.0f} events/s   p50 {res.percentile(50):5.1f} ms   "
        f"p99 {res.percentile(99):5.1f} ms"
    )


def _hot_flow(name: str) -> dict:
    return {
        "trigger": {"type": "event", "name": name},
        "start": "nap",
        "nodes": [
            {"id": "nap", "type": "wait", "seconds": 3600, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
        "settings": {"reentry": "always"},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=1000, help="enrollments per rate round (N)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rate rounds (baseline, then flows, each round)"
    )
    parser.add_argument("--pings", type=int, default=200, help="waiting runs pinged for the latency phase")
    parser.add_argument("--ping-rate", type=float, default=10.0, help="pings sent per second")
    parser.add_argument("--waiting", type=int, default=10000, help="enrollments waiting for the memory phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each hot-path phase")
    parser.add_argument(
        "--hot-rounds", type=int, default=3, help="hot-path rounds (no flows and 10 flows, order alternating)"
    )
    parser.add_argument("--users", type=int, default=5000, help="userIds of the hot-path events")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the hot path")
    parser.add_argument(
        "--server",
        default=os.environ.get("BENCH_DATABASE_SERVER", DEFAULT_SERVER),
        help="PostgreSQL server URL (a fresh database is created on it)",
    )
    parser.add_argument(
        "--temporal-file",
        action="store_true",
        help="the dev server persists to a SQLite file, as under `mp up` (default: in memory, as in tests)",
    )
    parser.add_argument("--trivial-worker", nargs=2, metavar=("ADDRESS", "QUEUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trivial_worker:
        await _trivial_worker(*args.trivial_worker)
        return
    if args.pings > args.enrollments:
        raise SystemExit("--pings must not exceed --enrollments")

    import asyncpg
    from temporalio.client import Client

    from bench.common import drop_database, fresh_database
    from bench.loadgen import run_load
    from core.settings import to_asyncpg_dsn
    from db.engine import create_engine, create_sessionmaker, session_scope
    from tests.flows.support import active_flow
    from tests.support.processes import temporal_dev_server, wait_for_temporal
    from tests.support.servers import free_port
    from workspaces.service import create_workspace_keys

    started_at = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mp-bench-flows-"))
    print(f"preparing database and a Temporal dev server (logs in {tmp})...", flush=True)
    database_url = await fresh_database(args.server, "mp_bench_flows")
    engine = create_engine(database_url, pool_size=2)
    sessions = create_sessionmaker(engine)
    async with session_scope(sessions) as session:
        main_keys = await create_workspace_keys(session, "bench-flows")
        plain_keys = await create_workspace_keys(session, "bench-plain")
        hot_keys = await create_workspace_keys(session, "bench-hot")
    flow_id = await active_flow(sessions, main_keys.workspace_id, _waiting_flow(), name="waiting")
    for name in HOT_TRIGGERS:
        await active_flow(sessions, hot_keys.workspace_id, _hot_flow(name), name=name)
    await engine.dispose()

    t_port, tracking_port, metrics_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{t_port}"
    queue, trivial_queue = f"bench-flows-{uuid.uuid4().hex[:6]}", f"bench-trivial-{uuid.uuid4().hex[:6]}"
    temporal = temporal_dev_server(tmp, t_port, persist=args.temporal_file, metrics_port=metrics_port)
    temporal.start()
    env = {
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": queue,
        "TRACKING_PORT": str(tracking_port),
        "HOST": "127.0.0.1",
        "REDIS_PREFIX": f"mp_bench_{uuid.uuid4().hex[:6]}:",
        "SECRET_KEY": uuid.uuid4().hex,
    }
    procs: dict[str, subprocess.Popen] = {}
    url = f"http://127.0.0.1:{tracking_port}"
    try:
        await wait_for_temporal(address)
        procs["worker"] = _spawn([sys.executable, "-m", "cli", "worker"], env, tmp / "worker.log")
        procs["tracking"] = _spawn([sys.executable, "-m", "cli", "tracking"], env, tmp / "tracking.log")
        procs["trivial"] = _spawn(
            [sys.executable, str(ROOT / "bench" / "flows.py"), "--trivial-worker", address, trivial_queue],
            {"PYTHONPATH": str(ROOT)},
            tmp / "trivial.log",
        )

        async def ready():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited; see {tmp}")
            return _logged(tmp / "worker.log", "worker polling") and _logged(
                tmp / "trivial.log", "trivial worker polling"
            )

        await _until(ready, 90, "the workers")
        client = await Client.connect(address)
        conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
        tracker = Tracker(url, main_keys.public_key)
        tasks = WorkflowTasks(f"http://127.0.0.1:{metrics_port}/metrics")

        async def up():
            try:
                return (await tracker.client.get("/health")).status_code == 200
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        await _until(up, 60, "tracking")
        await asyncio.sleep(2)  # let start-up settle before the idle reading
        idle = {"worker": _rss_mb(procs["worker"].pid), "temporal": _rss_mb(temporal.proc.pid)}

        # 1. Enrollment rate against raw signal-with-start.
        n = args.enrollments
        cpu = Cpu(
            {
                "worker": procs["worker"].pid,
                "temporal": temporal.proc.pid,
                "tracking": procs["tracking"].pid,
                "trivial worker": procs["trivial"].pid,
                "bench": os.getpid(),
            }
        )
        cpu_lines: list[str] = []
        rates: list[tuple[float, float, float, float]] = []
        enrolled = 0
        for r in range(args.rounds):
            print(
                f"rate round {r + 1}/{args.rounds}: {n:,} raw signal-with-starts, then {n:,} enrollments...",
                flush=True,
            )
            before = cpu.read()
            raw, raw_done = await baseline_round(client, tasks, trivial_queue, n, 32)
            middle = cpu.read()
            users = [f"u{enrolled + i}" for i in range(n)]
            flows, first = await enrollment_round(
                tracker, conn, tasks, main_keys.workspace_id, flow_id, users, enrolled
            )
            after = cpu.read()
            cpu_lines = [
                f"raw run (to completed):           {Cpu.per_unit(before, middle, n)}",
                f"enrollment (to its first node):   {Cpu.per_unit(middle, after, n)}",
            ]
            enrolled += n
            rates.append((raw, flows, raw_done, first))
            print(
                f"  raw {raw:,.0f}/s (completed {raw_done:,.0f}/s), enrollments {flows:,.0f}/s "
                f"(at first node {first:,.0f}/s)",
                flush=True,
            )

        # 2. Latency with `enrolled` runs waiting for PING.
        waiting = await _count(conn, "SELECT count(*) FROM flow_enrollments WHERE status = 'running'")
        print(
            f"latency: pinging {args.pings} of {waiting:,} waiting runs at {args.ping_rate:g}/s...",
            flush=True,
        )
        sample = random.Random(3).sample([f"u{i}" for i in range(enrolled)], args.pings)
        latencies = await latency_phase(tracker, conn, flow_id, sample, args.ping_rate)

        # 3. Memory with `--waiting` runs waiting.
        more = max(0, args.waiting - (enrolled - args.pings))
        print(f"memory: enrolling {more:,} more to {args.waiting:,} waiting...", flush=True)
        fill_started = time.perf_counter()
        await tracker.batch([f"w{i}" for i in range(more)], TRIGGER)
        target = enrolled + more

        async def filled():
            rows = await _count(conn, "SELECT count(*) FROM flow_enrollments WHERE flow_id = $1", flow_id)
            backlog = await _count(conn, "SELECT count(*) FROM outbox")
            return rows >= target and backlog == 0

        await _until(filled, 3600, "the waiting enrollments", interval=0.5)
        fill_seconds = time.perf_counter() - fill_started
        await asyncio.sleep(3)
        waiting = await _count(conn, "SELECT count(*) FROM flow_enrollments WHERE status = 'running'")
        loaded = {"worker": _rss_mb(procs["worker"].pid), "temporal": _rss_mb(temporal.proc.pid)}
        db_mb = _size_mb(tmp, "temporal.db*")
        await tracker.close()

        # 4. The hot path, with the worker stopped.
        procs["worker"].send_signal(signal.SIGTERM)
        procs["worker"].wait(30)
        print(f"hot path: warming {args.users:,} users in two workspaces...", flush=True)
        for keys in (plain_keys, hot_keys):
            warm = Tracker(url, keys.public_key)
            for start in range(0, args.users, 1000):
                batch = [
                    {"type": "identify", "userId": f"hot_{i}"}
                    for i in range(start, min(args.users, start + 1000))
                ]
                (await warm.client.post("/track/batch", json={"batch": batch})).raise_for_status()
            await warm.close()
        hot: list[tuple] = []
        for r in range(args.hot_rounds):
            print(
                f"hot round {r + 1}/{args.hot_rounds}: no flows and 10 flows ({args.seconds:g}s each)...",
                flush=True,
            )
            plain, with_flows = [
                await run_load(
                    url,
                    "/track",
                    HotBodies(args.users, r).track,
                    concurrency=args.connections,
                    seconds=args.seconds,
                    authorization=f"Bearer {keys.public_key}",
                )
                for keys in ((plain_keys, hot_keys) if r % 2 == 0 else (hot_keys, plain_keys))
            ]
            if r % 2:  # every other round runs the flows workspace first, so order effects cancel
                plain, with_flows = with_flows, plain
            hot.append((with_flows.events_per_second / plain.events_per_second, plain, with_flows))
            print(f"  {with_flows.events_per_second / plain.events_per_second:.2f}x", flush=True)
        announced = await _count(
            conn, "SELECT COALESCE(sum(size), 0) FROM outbox WHERE workspace_id = $1", hot_keys.workspace_id
        )
        hot_events = await _count(
            conn, "SELECT count(*) FROM events WHERE workspace_id = $1", hot_keys.workspace_id
        )
        await conn.close()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        temporal.stop()
        await drop_database(args.server, database_url)

    storage = "SQLite file" if args.temporal_file else "in memory"
    ratios = [f / r for r, f, _, _ in rates]
    first_ratios = [w / d for _, _, d, w in rates]
    hot.sort(key=lambda h: h[0])
    mid = hot[len(hot) // 2]
    print()
    print(
        f"flows benchmark — {os.cpu_count()} CPUs, Temporal dev server ({storage}), "
        f"{time.monotonic() - started_at:.0f}s in all"
    )
    print(f"  enrollment rate ({n:,} a round, {args.rounds} rounds):")
    for raw, flows, raw_done, first in rates:
        print(
            f"    signal-with-start returned  raw {raw:6,.0f}/s   /track → enrollment recorded, run started "
            f"{flows:6,.0f}/s ({flows / raw:.2f}x)"
        )
        print(
            f"    first workflow task done     raw {raw_done:6,.0f}/s   /track → run at its first node "
            f"{first:6,.0f}/s ({first / raw_done:.2f}x)"
        )
    print("    CPU ms per unit, last round:")
    for line in cpu_lines:
        print(f"      {line}")
    print(
        f"    median: enrollments recorded and started {statistics.median(ratios):.2f}x the raw "
        f"signal-with-start rate, at their first node {statistics.median(first_ratios):.2f}x the raw "
        "completion rate (target >= 0.80)"
    )
    print(
        f"  event → workflow ({len(latencies)} pings at {args.ping_rate:g}/s, "
        f"{enrolled:,} runs waiting): p50 {_pct(latencies, 50):.0f} ms, p99 {_pct(latencies, 99):.0f} ms, "
        f"max {max(latencies):.0f} ms (target p99 < 250)"
    )
    print(
        f"  waiting: {waiting:,} runs waiting (filled in {fill_seconds:.0f}s, "
        f"{more / fill_seconds:,.0f}/s through /track/batch)"
    )
    print(
        f"    worker RSS {idle['worker']:.0f} MB idle → {loaded['worker']:.0f} MB; "
        f"Temporal RSS {idle['temporal']:.0f} MB idle → {loaded['temporal']:.0f} MB"
        + (f"; Temporal SQLite file {db_mb:.0f} MB" if args.temporal_file else " (its database included)")
    )
    print(
        f"  hot path ({args.hot_rounds} rounds of {args.seconds:g}s, "
        f"{args.connections} connections, worker stopped):"
    )
    print(f"    /track, no flows     {_load_line(mid[1])}")
    print(
        f"    /track, 10 flows     {_load_line(mid[2])}   ({announced:,} of {hot_events:,} events announced)"
    )
    rounds = ", ".join(f"{h[0]:.2f}" for h in hot)
    print(f"    ratio {mid[0]:.2f}x (median round; rounds {rounds}; target >= 0.90)")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
