"""Funnels from rollups.

Semantics (the same as a read of `events`, which `funnel_from_events` in
analytics/repository.py still does and the tests compare against): a
profile enters at its first step-1 event in the range [start, end) (time
t1); it reaches step k when it has a step-k event after its step-(k-1)
time and no later than t1 + window, the earliest such event being its
step-k time. Counts are of profiles; conversion is per step.

Kept by the rollup pass (analytics/rollups.py), per slice of arrival time:

- `analytics_profile_ordinals`: a dense number per profile of a workspace
  (its bit below), given on the profile's first rolled-up event;
- `analytics_funnel_days`: per profile, event name and UTC day, the
  earliest MAX_TIMES times (ascending) and how many there were;
- `analytics_funnel_bits`: per event name and day, the profiles that did
  it, as a bitmap of ordinals (zlib-compressed, bit n = ordinal n), and
  beside it their first second of that day and whether they did it more
  than once that day (`Firsts`), and the row's version (the id of the
  transaction that last wrote it: the process keeps decoded rows by it,
  analytics/funnel_cache.py).

A funnel is answered in three moves, none of which reads `events`:

1. Bitmaps, a day at a time: step 1's profiles per day give the entry
   count (exact: a union of days) and each profile's entry day; those with
   a step-2 event on their entry day or within the window's days after it
   are the candidates. The others cannot reach step 2.
2. Candidates with no step 2 on their entry day but some on a day wholly
   inside their window (a window of two days or more) reached it: bitmaps
   decide them. For the others, first seconds: their entry second and the
   first second of step 2 on each day of their window decide step 2 for
   most of them (`_second_step`). Whole seconds cannot tell the same
   second, the window's last second, or an entry day whose first step-2
   event came before the entry with more after it; those, and the
   profiles that reached step 2 and have a step-3 day within their window
   (bitmaps again), go on to 3.
3. Exact times, for those only: their rows of `analytics_funnel_days`,
   step by step, give each profile's entry time and each next step's
   time, exactly as the definition above.

The one case the stored times cannot decide is a day with more than
MAX_TIMES events of a step where the previous step's time falls after the
stored ones: that profile's next time is then read from `events` by its
own index (`events_profile_time_idx`), one bounded read per such case.

Deleted events (an erased profile) stay counted, as in every rollup. A
funnel counts events received up to the rollups' watermark.
"""

from __future__ import annotations

import uuid
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import compress

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from analytics.funnel_cache import DayCache

Conn = AsyncSession | AsyncConnection

# Earliest times kept per profile, event name and day: enough for any
# ordinary day; past it, a same-day next step may need one read of events.
MAX_TIMES = 8
_WINDOW = "e.received_at > :lo AND e.received_at <= :hi"
# Decoded day rows, kept between funnels (analytics/funnel_cache.py).
CACHE = DayCache()


# --- bitmaps -----------------------------------------------------------------


def pack(bits: int) -> bytes:
    """A bitmap (a Python int, bit n = ordinal n) as stored."""
    return zlib.compress(bits.to_bytes((bits.bit_length() + 7) // 8, "little"), 1)


def unpack(stored: bytes | None) -> int:
    """The bitmap stored by `pack` (0 for none)."""
    return int.from_bytes(zlib.decompress(stored), "little") if stored else 0


def with_ordinals(bits: int, ordinals: Iterable[int]) -> int:
    """`bits` with the given ordinals set."""
    ordinals = list(ordinals)
    if not ordinals:
        return bits
    size = max(bits.bit_length(), max(ordinals) + 1)
    buf = bytearray(bits.to_bytes((size + 7) // 8, "little"))
    for n in ordinals:
        buf[n >> 3] |= 1 << (n & 7)
    return int.from_bytes(buf, "little")


def ordinals_of(bits: int) -> list[int]:
    """The ordinals set in a bitmap, ascending: its 64-bit words, the zero
    ones skipped in C (a sparse day of a million profiles: ~0.5 ms)."""
    n = (bits.bit_length() + 63) // 64
    words = array("Q")
    words.frombytes(bits.to_bytes(n * 8, "little"))
    out = []
    for w in compress(range(n), words):
        word, base = words[w], w << 6
        while word:
            low = word & -word
            out.append(base + low.bit_length() - 1)
            word ^= low
    return out


def window_unions(days: Sequence[int], width: int) -> list[int]:
    """For each i, the union of days[i : i + width] (fewer at the end), in
    O(len(days)) unions: blocks of `width`, a suffix union within each
    block and a prefix union within the next."""
    n = len(days)
    if width <= 1:
        return list(days)
    prefix, suffix = [0] * n, [0] * n
    for i in range(n):
        prefix[i] = days[i] | (prefix[i - 1] if i % width else 0)
    for i in range(n - 1, -1, -1):
        suffix[i] = days[i] | (suffix[i + 1] if (i + 1) % width and i + 1 < n else 0)
    out = []
    for i in range(n):
        j = min(n - 1, i + width - 1)
        out.append(suffix[i] if i // width == j // width else suffix[i] | prefix[j])
    return out


class Firsts:
    """Per event name and day, beside its bitmap: each profile's first
    second of the day (UTC, whole seconds) and whether it did the event
    more than once that day, in ordinal order (stored zlib-compressed:
    count, ordinals, seconds as uint32, flags as bytes)."""

    __slots__ = ("_multi", "_ordinals", "_seconds", "_stored")

    def __init__(self, ordinals: array, seconds: array, multi: bytes, stored: bytes | None = None) -> None:
        self._ordinals, self._seconds, self._multi, self._stored = ordinals, seconds, multi, stored

    @classmethod
    def unpack(cls, stored: bytes | None) -> Firsts:
        """Decompressed on first use (a funnel reads many days, uses some)."""
        return cls(array("I"), array("I"), b"", stored or None)

    def _load(self) -> None:
        raw, self._stored = zlib.decompress(self._stored), None  # type: ignore[arg-type]
        n = int.from_bytes(raw[:4], "little")
        self._ordinals.frombytes(raw[4 : 4 + 4 * n])
        self._seconds.frombytes(raw[4 + 4 * n : 4 + 8 * n])
        self._multi = raw[4 + 8 * n :]

    @property
    def ordinals(self) -> array:
        if self._stored is not None:
            self._load()
        return self._ordinals

    @property
    def seconds(self) -> array:
        if self._stored is not None:
            self._load()
        return self._seconds

    @property
    def multi(self) -> bytes:
        if self._stored is not None:
            self._load()
        return self._multi

    def pack(self) -> bytes:
        n = len(self.ordinals)
        return zlib.compress(
            n.to_bytes(4, "little") + self.ordinals.tobytes() + self.seconds.tobytes() + bytes(self.multi), 1
        )

    @classmethod
    def merged(cls, old: Firsts, ordinals: list[int], seconds: list[int], multi: list[bool]) -> Firsts:
        """`old` with these (sorted) profiles' values set."""
        if not old.ordinals:
            return cls(array("I", ordinals), array("I", seconds), bytes(multi))
        values = dict(zip(old.ordinals, zip(old.seconds, old.multi, strict=True), strict=True))
        values.update(zip(ordinals, zip(seconds, multi, strict=True), strict=True))
        keys = sorted(values)
        return cls(
            array("I", keys), array("I", (values[k][0] for k in keys)), bytes(values[k][1] for k in keys)
        )

    def get(self, ordinal: int) -> tuple[int, bool] | None:
        """(first second of the day, more than one) of a profile, or None."""
        ordinals = self.ordinals
        i = bisect_left(ordinals, ordinal)
        if i < len(ordinals) and ordinals[i] == ordinal:
            return self._seconds[i], bool(self._multi[i])
        return None


# --- the rollup pass ---------------------------------------------------------


async def add_funnel_slice(conn: AsyncConnection, lo: datetime, hi: datetime) -> int:
    """Add the events received in (lo, hi] to the funnel rollups (one
    transaction of the rollup pass, which holds the `funnel` watermark's
    lock, so ordinals are given by one pass at a time); returns how many
    (profile, name, day) rows it created."""
    # Each workspace's highest ordinal first, in a statement of its own: read
    # within the INSERT below, max() would walk past that statement's own
    # (invisible) new entries once per row.
    tops = await conn.execute(
        text(
            f"""
            SELECT w.workspace_id,
                   coalesce((SELECT max(o.ordinal) FROM analytics_profile_ordinals o
                             WHERE o.workspace_id = w.workspace_id), -1) AS top
            FROM (SELECT DISTINCT e.workspace_id FROM events e WHERE {_WINDOW}) w
            """
        ),
        {"lo": lo, "hi": hi},
    )
    tops = tops.all()
    if not tops:
        return 0
    await conn.execute(
        text(
            f"""
            INSERT INTO analytics_profile_ordinals (workspace_id, profile_id, ordinal)
            SELECT n.workspace_id, n.profile_id,
                   t.top + row_number() OVER (PARTITION BY n.workspace_id ORDER BY n.profile_id)
            FROM (
                SELECT DISTINCT e.workspace_id, e.profile_id FROM events e
                WHERE {_WINDOW} AND e.profile_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM analytics_profile_ordinals o
                                  WHERE o.workspace_id = e.workspace_id AND o.profile_id = e.profile_id)
            ) n
            JOIN unnest(CAST(:ws AS uuid[]), CAST(:tops AS integer[])) t(workspace_id, top)
              ON t.workspace_id = n.workspace_id
            """
        ),
        {"lo": lo, "hi": hi, "ws": [r.workspace_id for r in tops], "tops": [r.top for r in tops]},
    )
    # Rows this slice touched, kept aside for this transaction (a backfill's
    # slice can hold millions): those it created (xmax = 0: inserted, not
    # updated) are the (profile, name, day) pairs new to the bitmaps; all of
    # them give their profile's first second of the day and whether it had
    # more than one event to the day's `firsts`.
    await conn.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS funnel_touched (workspace_id uuid, name text, day date, "
            "ordinal integer, inserted boolean, second integer, multi boolean) ON COMMIT DELETE ROWS"
        )
    )
    await conn.execute(
        text(
            f"""
            WITH agg AS (
                SELECT e.workspace_id, e.name, o.ordinal, (e.occurred_at AT TIME ZONE 'UTC')::date AS day,
                       (array_agg(e.occurred_at ORDER BY e.occurred_at))[1:{MAX_TIMES}] AS times,
                       count(*) AS n
                FROM events e
                JOIN analytics_profile_ordinals o
                  ON o.workspace_id = e.workspace_id AND o.profile_id = e.profile_id
                WHERE {_WINDOW}
                GROUP BY 1, 2, 3, 4
            ), stored AS (
                INSERT INTO analytics_funnel_days AS t (workspace_id, name, ordinal, day, times, count)
                SELECT workspace_id, name, ordinal, day, times, n FROM agg
                ON CONFLICT (workspace_id, name, ordinal, day) DO UPDATE SET
                    times = ARRAY(
                        SELECT x FROM unnest(t.times || EXCLUDED.times) x ORDER BY x LIMIT {MAX_TIMES}
                    ),
                    count = t.count + EXCLUDED.count
                RETURNING workspace_id, name, day, ordinal, (xmax = 0) AS inserted,
                          (floor(extract(epoch FROM t.times[1]))::bigint % 86400)::integer AS second,
                          t.count > 1 AS multi
            )
            INSERT INTO funnel_touched (workspace_id, name, day, ordinal, inserted, second, multi)
            SELECT workspace_id, name, day, ordinal, inserted, second, multi FROM stored
            """
        ),
        {"lo": lo, "hi": hi},
    )
    keys = (await conn.execute(text("SELECT DISTINCT workspace_id, name, day FROM funnel_touched"))).all()
    if not keys:
        return 0
    current = await conn.execute(
        text(
            """
            SELECT b.workspace_id, b.name, b.day, b.bits, b.firsts FROM analytics_funnel_bits b
            JOIN unnest(CAST(:ws AS uuid[]), CAST(:names AS text[]), CAST(:days AS date[])) k(ws, name, day)
              ON b.workspace_id = k.ws AND b.name = k.name AND b.day = k.day
            FOR UPDATE OF b
            """
        ),
        {
            "ws": [k.workspace_id for k in keys],
            "names": [k.name for k in keys],
            "days": [k.day for k in keys],
        },
    )
    stored = {(r.workspace_id, r.name, r.day): (r.bits, r.firsts) for r in current}
    rows, fresh = [], 0
    # A group at a time (a day's rows of one name), packed as it comes.
    groups = await conn.stream(
        text(
            "SELECT workspace_id, name, day, array_agg(ordinal ORDER BY ordinal) AS ordinals, "
            "array_agg(second ORDER BY ordinal) AS seconds, array_agg(multi ORDER BY ordinal) AS multi, "
            "array_agg(ordinal) FILTER (WHERE inserted) AS created "
            "FROM funnel_touched GROUP BY 1, 2, 3"
        )
    )
    async for g in groups:
        old_bits, old_firsts = stored.pop((g.workspace_id, g.name, g.day), (None, None))
        created = g.created or []
        bits = pack(with_ordinals(unpack(old_bits), created))
        firsts = Firsts.merged(Firsts.unpack(old_firsts), g.ordinals, g.seconds, g.multi).pack()
        fresh += len(created)
        rows.append({"ws": g.workspace_id, "name": g.name, "day": g.day, "bits": bits, "firsts": firsts})
    await conn.execute(
        text(
            """
            INSERT INTO analytics_funnel_bits (workspace_id, name, day, bits, firsts, version)
            VALUES (:ws, :name, :day, :bits, :firsts, CAST(CAST(pg_current_xact_id() AS text) AS bigint))
            ON CONFLICT (workspace_id, name, day) DO UPDATE SET
                bits = EXCLUDED.bits, firsts = EXCLUDED.firsts, version = EXCLUDED.version
            """
        ),
        rows,
    )
    return fresh


# --- answering ---------------------------------------------------------------


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


async def _bitmaps(
    conn: Conn, ws: uuid.UUID, name: str, days: list[date], *, firsts: bool = False
) -> tuple[list[int], list[Firsts]]:
    """The day bitmaps of `name` (and their `Firsts` when asked), one per
    day: from the process's cache for rows whose version it holds, the
    others read and decoded (and kept)."""
    bounds = {"ws": ws, "name": name, "start": days[0], "last": days[-1]}
    where = "WHERE workspace_id = :ws AND name = :name AND day >= :start AND day <= :last"
    versions = await conn.execute(text(f"SELECT day, version FROM analytics_funnel_bits {where}"), bounds)
    kinds = ("bits", "firsts") if firsts else ("bits",)
    base = (_database(conn), ws, name)
    found: dict[tuple[date, str], object] = {}
    stale = []
    for day, version in versions:
        for kind in kinds:
            value = CACHE.get((*base, day, kind), version)
            if value is None:
                stale.append(day)
                break
            found[day, kind] = value
    if stale:
        columns = ", ".join(kinds)
        rows = await conn.execute(
            text(f"SELECT day, version, {columns} FROM analytics_funnel_bits {where} AND day = ANY(:days)"),
            {**bounds, "days": stale},
        )
        for row in rows:
            for kind, value, size in _decoded(row, kinds):
                CACHE.put((*base, row.day, kind), row.version, value, size)
                found[row.day, kind] = value
    bits = [found.get((d, "bits"), 0) for d in days]
    cols = [found.get((d, "firsts"), _NO_FIRSTS) for d in days] if firsts else []
    return bits, cols  # type: ignore[return-value]


_NO_FIRSTS = Firsts.unpack(None)


def _decoded(row, kinds: tuple[str, ...]) -> Iterable[tuple[str, object, int]]:
    """(kind, decoded value, its size in bytes) of a row's columns."""
    bits = unpack(row.bits)
    yield "bits", bits, bits.bit_length() // 8 + 64
    if "firsts" in kinds:
        cols = Firsts.unpack(row.firsts)
        yield "firsts", cols, 9 * len(cols.ordinals) + 256


def _database(conn: Conn) -> str:
    """Which database `conn` reads (a key of the cache: workspaces can be
    copied between databases)."""
    url = (conn.bind if isinstance(conn, AsyncSession) else conn).engine.url
    return f"{url.host}:{url.port}/{url.database}"


def _second_step(
    entry_second: int,
    day: int,
    ordinal: int,
    seconds: list[Firsts],
    extra: int,
    window: int,
    skip: int = 0,
) -> bool | None:
    """Whether a profile that entered at `entry_second` of day index `day`
    did the second step after that and within `window` seconds, from the
    first seconds of its days; None when whole seconds cannot tell (the
    same second, the window's last second, or an earlier first event on
    the entry day followed by more that day). `skip`: the caller knows
    that a profile with no step 2 on its entry day has none on the `skip`
    days after it either (the bitmaps decided those who do), so they are
    not looked up (a 168 h window: one lookup instead of eight)."""
    on_entry_day = False
    for k in range(extra + 1):
        if 0 < k <= skip and not on_entry_day:
            continue
        hit = seconds[day + k].get(ordinal) if day + k < len(seconds) else None
        if hit is None:
            continue
        on_entry_day = k == 0
        second, more = hit
        at = k * 86400 + second
        if k == 0 and second <= entry_second:
            if second == entry_second or more:
                return None
            continue
        if at == entry_second + window:
            return None
        return at < entry_second + window
    return False


# The earliest kept `name` time of profile c after c.prev, up to the day of
# c.until (maybe past c.until), and whether c.prev's own day kept too few
# times to tell (more events that day than MAX_TIMES, none kept after
# c.prev): one probe of the primary key per profile.
_NEXT = """
    SELECT min((SELECT min(x) FROM unnest(f.times) x WHERE x > {prev})) AS at,
           coalesce(bool_or(f.day = (({prev}) AT TIME ZONE 'UTC')::date
                            AND f.count > cardinality(f.times)
                            AND f.times[cardinality(f.times)] <= {prev}), false) AS unsure
    FROM analytics_funnel_days f
    WHERE f.workspace_id = :ws AND f.name = {name} AND f.ordinal = c.ordinal
      AND f.day >= (({prev}) AT TIME ZONE 'UTC')::date AND f.day <= (({until}) AT TIME ZONE 'UTC')::date
"""


async def _entries_and_seconds(
    conn: Conn,
    ws: uuid.UUID,
    steps: list[str],
    ordinals: list[int],
    start: date,
    end: date,
    window: timedelta,
) -> list:
    """Per candidate: its entry time (its first step-1 time in [start,
    end)) and the next-step answer of `_NEXT` for step 2, in one statement."""
    next_sql = _NEXT.format(prev="e.at", until="e.at + CAST(:window AS interval)", name=":second")
    result = await conn.execute(
        text(
            f"""
            SELECT c.ordinal, e.at AS entry, n.at, n.unsure
            FROM unnest(CAST(:ordinals AS integer[])) c(ordinal)
            CROSS JOIN LATERAL (
                SELECT f.times[1] AS at FROM analytics_funnel_days f
                WHERE f.workspace_id = :ws AND f.name = :first AND f.ordinal = c.ordinal
                  AND f.day >= :start AND f.day < :end
                ORDER BY f.day LIMIT 1
            ) e
            CROSS JOIN LATERAL ({next_sql}) n
            """
        ),
        {
            "ws": ws,
            "first": steps[0],
            "second": steps[1],
            "ordinals": ordinals,
            "start": start,
            "end": end,
            "window": window,
        },
    )
    return result.all()


async def _nexts(
    conn: Conn, ws: uuid.UUID, name: str, previous: dict[int, datetime], until: dict[int, datetime]
) -> list:
    """Per profile, its earliest kept `name` time after its previous step's
    time, up to the day of its window's end (`at`, maybe past that end), and
    whether the previous step's own day kept too few times to tell
    (`unsure`: more events that day than MAX_TIMES, none kept after it).
    One probe of the primary key per profile, computed in the database."""
    ordinals = list(previous)
    next_sql = _NEXT.format(prev="c.prev", until="c.until", name=":name")
    result = await conn.execute(
        text(
            f"""
            SELECT c.ordinal, n.at, n.unsure
            FROM unnest(CAST(:ordinals AS integer[]), CAST(:prev AS timestamptz[]),
                        CAST(:until AS timestamptz[])) c(ordinal, prev, until)
            CROSS JOIN LATERAL ({next_sql}) n
            WHERE n.at IS NOT NULL OR n.unsure
            """
        ),
        {
            "ws": ws,
            "name": name,
            "ordinals": ordinals,
            "prev": [previous[o] for o in ordinals],
            "until": [until[o] for o in ordinals],
        },
    )
    return result.all()


async def _next_from_events(
    conn: Conn, ws: uuid.UUID, ordinal: int, name: str, after: datetime, before: datetime
) -> datetime | None:
    """The earliest `name` event of a profile in (after, before): the rare
    day with more events than the rollup keeps times of."""
    return (
        await conn.execute(
            text(
                """
                SELECT min(e.occurred_at) FROM events e
                JOIN analytics_profile_ordinals o
                  ON o.workspace_id = e.workspace_id AND o.profile_id = e.profile_id
                WHERE o.workspace_id = :ws AND o.ordinal = :ordinal AND e.workspace_id = :ws
                  AND e.name = :name AND e.occurred_at > :after AND e.occurred_at < :before
                """
            ),
            {"ws": ws, "ordinal": ordinal, "name": name, "after": after, "before": before},
        )
    ).scalar_one()


def _utc_date(at: datetime) -> date:
    offset = at.utcoffset()
    return (at - offset).date() if offset else at.date()


async def funnel_counts(
    conn: Conn, ws: uuid.UUID, steps: list[str], start: datetime, end: datetime, window_seconds: int
) -> list[int]:
    """Profiles reaching each step (see the module's docstring); `start`
    and `end` are whole UTC days."""
    days = _days(_utc_date(start), _utc_date(end))
    extra = -(-window_seconds // 86400)  # days after the entry day a next step can fall on
    later = _days(days[0], days[-1] + timedelta(days=extra + 1))
    firsts, entries = await _bitmaps(conn, ws, steps[0], days, firsts=True)
    seconds, second_cols = await _bitmaps(conn, ws, steps[1], later, firsts=True)
    reach = window_unions(seconds, extra + 1)
    full = window_seconds // 86400 - 1  # days after the entry day wholly inside any window from it
    inside = _inside(seconds, full)
    thirds = []
    if len(steps) > 2:  # only whether a step-3 day falls in the window: bitmaps, no seconds
        thirds = window_unions((await _bitmaps(conn, ws, steps[2], later))[0], extra + 1)
    seen, decided, exact = 0, 0, []
    for i, bits in enumerate(firsts):
        entered = bits & ~seen
        seen |= bits
        candidates = entered & reach[i]
        if not candidates:
            continue
        # No step 2 on the entry day but some on a day wholly inside the
        # window: reached, without a look at seconds.
        sure = candidates & ~seconds[i] & inside[i + 1]
        reached = []
        for ordinal in ordinals_of(candidates & ~sure):
            entry_second = entries[i].get(ordinal)[0]  # type: ignore[index]
            verdict = _second_step(entry_second, i, ordinal, second_cols, extra, window_seconds, full)
            if verdict is None:
                exact.append(ordinal)
            elif verdict:
                reached.append(ordinal)
        # Those reaching step 2 with a step-3 day in their window go on to
        # exact times; the others are decided.
        third = thirds[i] if thirds else 0
        exact += ordinals_of(sure & third)
        decided += (sure & ~third).bit_count()
        onward = set(ordinals_of(candidates & ~sure & third))
        for ordinal in reached:
            if ordinal in onward:
                exact.append(ordinal)
            else:
                decided += 1
    counts = [seen.bit_count(), decided] + [0] * (len(steps) - 2)
    if exact:
        for k, n in enumerate(await _exact(conn, ws, steps, exact, days, window_seconds), start=1):
            counts[k] += n
    return counts


def _inside(seconds: list[int], full: int) -> list[int]:
    """For each day index d, the profiles with step 2 on one of the days
    d .. d + full - 1, where `full` counts the days after an entry day that
    lie wholly inside any window starting on it (day k ends before k + 1
    days, which is no later than the window's end when (k + 1) days fit in
    it); nothing when no day does."""
    if full < 1:
        return [0] * (len(seconds) + 1)
    return [*window_unions(seconds, full), 0]


async def _exact(
    conn: Conn, ws: uuid.UUID, steps: list[str], alive: list[int], days: list[date], window_seconds: int
) -> list[int]:
    """Counts of steps 2.. among `alive`, from their exact times."""
    counts = [0] * (len(steps) - 1)
    window = timedelta(seconds=window_seconds)
    first = await _entries_and_seconds(conn, ws, steps, alive, days[0], days[-1] + timedelta(days=1), window)
    until = {r.ordinal: r.entry + window for r in first}
    previous = {r.ordinal: r.entry for r in first}
    rows = [r for r in first if r.at is not None or r.unsure]
    for k, name in enumerate(steps[1:], start=1):
        if k > 1:
            rows = await _nexts(conn, ws, name, previous, until)
        reached: dict[int, datetime] = {}
        for row in rows:
            found = row.at
            if row.unsure:  # the previous step's day, past the kept times: read that day
                t_prev = previous[row.ordinal]
                day_end = datetime.combine(_utc_date(t_prev) + timedelta(days=1), time(), UTC)
                found = await _next_from_events(conn, ws, row.ordinal, name, t_prev, day_end) or found
            if found is not None and found <= until[row.ordinal]:
                reached[row.ordinal] = found
        counts[k - 1] = len(reached)
        previous = reached
        if not previous:
            break
    return counts
