"""What announcing events costs the tracking hot path's statement, measured
in PostgreSQL alone (no HTTP, no Python server), in one run.

    python bench/outbox_statement.py [--group 30] [--rounds 2000]

On a fresh database with one workspace, its profiles and one listener of
the benchmark's event, it runs the hot path's single statement
(tracking/repository.LOCK_AND_INSERT_SQL: lock the group's profiles, insert
its events, announce them) for groups of `--group` events, in three
variants taking turns statement by statement:

- `none`: no announcement (the events insert alone: the code before the
  outbox, or no listener);
- `per-event`: one outbox row per announced event (the outbox as it was
  before migration 0008_outbox_batches, in a table of that shape);
- `batched`: the statement as it is (one row per statement and consumer
  carrying arrays);
- `unheard`: the statement as it is, for events nobody listens for (what
  matching costs when it finds nothing).

Each statement commits on its own, as in tracking. It prints, per
variant, the median wall time of a statement, the median CPU time its
PostgreSQL backend spent per event (per statement, from the scheduler) and
the median of its per-round difference to `none` (neighbouring statements
share the machine's state, so that difference is the steady figure on a
busy machine); then the work each variant does per event, counted by
`EXPLAIN (ANALYZE, WAL, BUFFERS)`: WAL records and shared buffers touched
by the whole statement, and WAL records, bytes and buffers of its
announcing part. Those counts are exact whatever else runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/email.py would shadow the standard library's `email` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import psutil
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import drop_database, fresh_database
from core.ids import uuid7
from core.settings import to_asyncpg_dsn
from definitions.events import ListenerKind
from tracking import repository as tracking_repo

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
EVENT = "Product Viewed"
UNHEARD = "Product Compared"

# The lock-and-check part of LOCK_AND_INSERT_SQL, then the events insert.
_HEAD = tracking_repo.LOCK_AND_INSERT_SQL.split("announced AS (")[0]
_TAIL = "\nSELECT (SELECT ok FROM checked), ARRAY(SELECT id FROM inserted)\n"

PER_EVENT_TABLE = """
CREATE TABLE outbox_per_event (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL,
    consumer text NOT NULL,
    profile_id uuid NOT NULL,
    event_id uuid NOT NULL,
    event_name text,
    occurred_at timestamptz,
    message_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX ON outbox_per_event (claimed_until) WHERE claimed_until IS NOT NULL;
"""
PER_EVENT_CTE = f"""announced AS (
    INSERT INTO outbox_per_event
        (workspace_id, consumer, profile_id, event_id, event_name, occurred_at, message_id)
    SELECT e.workspace_id, l.consumer, e.profile_id, e.id, e.name, e.occurred_at, e.message_id
    FROM inserted e
    JOIN outbox_listeners l
      ON l.workspace_id = e.workspace_id AND l.kind = '{ListenerKind.EVENT}' AND l.name = e.name
)"""


def _variants() -> dict[str, str]:
    head = _HEAD.rstrip().rstrip(",")
    assert head.rstrip().endswith(")"), "LOCK_AND_INSERT_SQL changed shape: update this bench"
    return {
        "none": head + _TAIL,
        "per-event": head + ",\n" + PER_EVENT_CTE + _TAIL,
        "batched": tracking_repo.LOCK_AND_INSERT_SQL,
        # The same statement for events no listener waits for: the cost of
        # matching alone (the join finds nothing, nothing is inserted).
        "unheard": tracking_repo.LOCK_AND_INSERT_SQL,
    }


def _json(rows: list[dict]) -> str:
    return orjson.dumps(rows, default=str).decode()


class Groups:
    """Parameters of one group commit: `size` events of distinct known profiles."""

    def __init__(self, workspace_id: uuid.UUID, profiles: list[tuple[uuid.UUID, str]], size: int) -> None:
        self.ws, self.profiles, self.size = workspace_id, profiles, size
        self.rng = random.Random(7)
        self.now = datetime.now(UTC)
        self.counter = 0

    def next(self, name: str = EVENT) -> tuple[str, str]:
        chosen = sorted(self.rng.sample(self.profiles, self.size))
        locks, events = [], []
        for pid, external_id in chosen:
            self.counter += 1
            at = self.now - timedelta(seconds=self.counter % 86400)
            locks.append({"id": pid, "fs": at, "ls": at, "e": None, "x": external_id})
            events.append(
                {
                    "i": uuid7(),
                    "w": self.ws,
                    "p": pid,
                    "y": "track",
                    "n": name,
                    "pr": {"product_id": "sku_1", "price": 10.5, "currency": "USD"},
                    "c": {"library": {"name": "bench"}},
                    "o": at,
                    "r": self.now,
                    "m": f"m{self.counter}",
                }
            )
        return _json(locks), _json(events)


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process: nanosecond-precise from the scheduler on Linux
    (psutil's clock ticks are 10 ms, longer than a statement)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def _ctes(node: dict, out: dict[str, tuple[float, float, float]]) -> None:
    """WAL records, WAL bytes and shared buffers touched by each CTE of a
    plan (each CTE's node counts its own execution)."""
    name = node.get("Subplan Name") or ""
    if name.startswith("CTE "):
        buffers = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
        out[name[4:]] = (node.get("WAL Records", 0), node.get("WAL Bytes", 0), buffers)
    for child in node.get("Plans", []):
        _ctes(child, out)


async def _work(
    conn: asyncpg.Connection, sql: str, groups: Groups, statements: int, event: str
) -> tuple[list[float], list[float]]:
    """Per event: (WAL records, WAL bytes, buffers) of the statement's writing
    CTEs (lock, insert, announce) and of the announcing CTE alone."""
    total, announcing = [0.0] * 3, [0.0] * 3
    for _ in range(statements):
        locks, events = groups.next(event)
        plan = orjson.loads(
            await conn.fetchval("EXPLAIN (ANALYZE, WAL, BUFFERS, FORMAT JSON) " + sql, locks, events)
        )[0]["Plan"]
        ctes: dict[str, tuple[float, float, float]] = {}
        _ctes(plan, ctes)
        for cte in ("locked", "inserted", "announced"):
            for n, value in enumerate(ctes.get(cte, (0, 0, 0))):
                total[n] += value
                if cte == "announced":
                    announcing[n] += value
    events = statements * groups.size
    return [x / events for x in total], [x / events for x in announcing]


async def _setup(url: str, users: int) -> tuple[uuid.UUID, list[tuple[uuid.UUID, str]]]:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        ws = uuid7()
        await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'bench')", ws)
        await conn.execute(
            "INSERT INTO outbox_listeners (workspace_id, kind, name, consumer) "
            "VALUES ($1, $2, $3, 'segments')",
            ws,
            ListenerKind.EVENT.value,
            EVENT,
        )
        rows = await conn.fetch(
            "INSERT INTO profiles (id, workspace_id, external_id, traits) "
            "SELECT mp_uuid7(), $1, 'bench_' || n, '{}' FROM generate_series(1, $2) n "
            "RETURNING id, external_id",
            ws,
            users,
        )
        await conn.execute(PER_EVENT_TABLE)
        await conn.execute("VACUUM ANALYZE")
        return ws, [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", type=int, default=30, help="events per statement (a /track group is ~30)")
    parser.add_argument("--rounds", type=int, default=2000, help="statements per variant")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--explained", type=int, default=100, help="statements explained per variant")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_SERVER", DEFAULT_SERVER))
    args = parser.parse_args()

    variants = _variants()
    url = await fresh_database(args.server, "mp_bench_outbox_stmt")
    try:
        ws, profiles = await _setup(url, args.users)
        groups = Groups(ws, profiles, args.group)
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        statements = {name: await conn.prepare(sql) for name, sql in variants.items()}
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for n in range(args.rounds):
            # One statement of each variant a round, in a rotating order:
            # neighbours share the machine's state, so the per-round
            # differences cancel what other processes do to the timings.
            for name in names[n % len(names) :] + names[: n % len(names)]:
                locks, events = groups.next(UNHEARD if name == "unheard" else EVENT)
                c0, t0 = _cpu_seconds(backend), time.perf_counter()
                ok, inserted = await statements[name].fetchrow(locks, events)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append((_cpu_seconds(backend) - c0) * 1e6 / args.group)
                assert ok and len(inserted) == args.group
        work = {
            name: await _work(conn, sql, groups, args.explained, UNHEARD if name == "unheard" else EVENT)
            for name, sql in variants.items()
        }
        announced = await conn.fetchval("SELECT COALESCE(sum(size), 0) FROM outbox")
        per_event = await conn.fetchval("SELECT count(*) FROM outbox_per_event")
        await conn.close()
    finally:
        await drop_database(args.server, url)

    base_cpu = statistics.median(cpu["none"])
    print(
        f"\nhot-path statement, {args.group} events a statement, {args.rounds} rounds of one statement "
        f"per variant ({os.cpu_count()} CPUs)"
    )
    for name in names:
        w = statistics.median(wall[name]) * 1e6
        c = statistics.median(cpu[name])
        # Median of the per-round differences to `none` (paired: robust to load).
        diff = statistics.median(x - y for x, y in zip(cpu[name], cpu["none"], strict=True))
        quartiles = statistics.quantiles(cpu[name], n=4)
        print(
            f"  {name:<10} wall {w:7.0f} us a statement   PostgreSQL CPU {c:6.1f} us an event "
            f"(quartiles {quartiles[0]:.1f}-{quartiles[2]:.1f}); over none, paired: "
            f"{diff:+5.2f} us an event ({diff / base_cpu:+.1%})"
        )
    # The statement's WAL bytes are left out: full-page images after each
    # checkpoint (whenever it falls) swamp them; the announcing part's
    # pages are new and carry none.
    print(
        f"  work an event, from EXPLAIN (ANALYZE, WAL, BUFFERS) of {args.explained} statements a variant "
        "(exact counts, not disturbed by other load):"
    )
    for name in names:
        total, announcing = work[name]
        print(
            f"  {name:<10} statement: {total[0]:5.2f} WAL records, {total[2]:5.2f} buffers;  "
            f"of which announcing: {announcing[0]:5.2f} WAL records, {announcing[1]:5.0f} WAL bytes, "
            f"{announcing[2]:5.2f} buffers"
        )
    print(f"  announced: {announced:,} events in batched rows, {per_event:,} per-event rows")


if __name__ == "__main__":
    uvloop.run(main())
