"""Process-level tuning shared by the long-running processes."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path


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


def keep_bytecode(package_dir: Path) -> None:
    """Let this process read and write compiled bytecode for `package_dir`.

    Temporal's sandbox imports a workflow's module afresh for every new
    workflow run. Without a cached `.pyc` (PYTHONDONTWRITEBYTECODE is set on
    many machines and images, this one included) each run recompiled
    `workflows/flows.py` from source: 17% of the worker's CPU during an
    enrollment burst (py-spy, bench/flows.py). The cache goes beside the
    source, or under the temp folder when the source is read-only.
    """
    sys.dont_write_bytecode = False
    if not os.access(package_dir, os.W_OK) and sys.pycache_prefix is None:
        sys.pycache_prefix = str(Path(tempfile.gettempdir()) / "mp-pycache")
