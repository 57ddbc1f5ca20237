"""Time-ordered UUIDs (version 7), so new rows land at the end of indexes
and cursor pagination by id follows creation order."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime

_POOL_BYTES = 10 * 512
_pool = b""
_offset = _POOL_BYTES
_UUID = uuid.UUID
_SAFE = uuid.SafeUUID.unknown


def _random_80() -> int:
    # One getrandom() call serves 512 ids: the syscall per id was a
    # measurable share of the tracking hot path.
    global _pool, _offset  # noqa: PLW0603 - module state is the cheapest on this hot path
    if _offset >= _POOL_BYTES:
        _pool, _offset = os.urandom(_POOL_BYTES), 0
    start = _offset
    _offset = start + 10
    return int.from_bytes(_pool[start : start + 10], "big")


def uuid7() -> uuid.UUID:
    """A version-7 UUID: 48 bits of Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = _random_80()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7000 << 64  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0x8000_0000_0000_0000  # variant 10
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return _UUID(int=value)


def uuid7_floor(at: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond `at`: `id >= uuid7_floor(t)`
    selects rows created from `t` on through an index on the id."""
    ms = int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    return _UUID(int=(ms << 80) | (0x7000 << 64) | 0x8000_0000_0000_0000)
