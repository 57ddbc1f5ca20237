"""Decoded day rows of the funnel rollups, kept in the process between
funnels.

A 90-day funnel reads two or three names' day rows (bitmaps of a million
profiles, first-second columns of tens of thousands) and fetching and
decompressing them is most of its time. Past days rarely change (only when
late events arrive), so each decoded row is kept here with its row's
`version` (the id of the rollup transaction that last wrote it, never
reused: migration 0014). Every funnel reads the versions of the rows it
needs first, in one small statement, and takes from here only the entries
whose version still matches: a row rewritten since (late events, a new
rollup pass) is read anew. Keys carry the database and the workspace.

Bounded by the bytes of what it holds (the least recently used go first);
one cache per process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

# A 90-day funnel of three names at a million profiles holds ~70 MB.
MAX_BYTES = 192 * 2**20


class DayCache:
    """Values by key, each valid for one version, bounded by their sizes."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[int, object, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, version: int) -> object | None:
        """The value kept for `key` if it was kept at this version."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, version: int, value: object, size: int) -> None:
        """Keep `value` (about `size` bytes); one larger than the whole
        cache is not kept."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        if size > self.max_bytes:
            return
        self._entries[key] = (version, value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
