"""Process-level tuning shared by the long-running processes."""

from __future__ import annotations

import gc


def tune_gc(thresholds: str) -> None:
    """Make the cyclic garbage collector run rarely.

    The tracking and worker processes allocate short-lived objects for every
    call or message; with Python's default thresholds the collector runs
    thousands of times a second and walks every tracked object (caches
    included). Objects alive after start-up are frozen out of collection.
    Measured in bench/tracking.py and bench/email.py (docs/benchmarks.md).
    """
    if not thresholds:
        return
    gc.freeze()
    gc.set_threshold(*(int(part) for part in thresholds.split(",")))
