"""What every activity wraps its work in: a heartbeat while it runs, and
permanent failures turned into non-retryable application errors.

Temporal retries an activity on any exception. A retry helps when the
database blipped; it cannot help when the row is gone or the stored
definition is invalid, so those fail on the first attempt (the error's
`type` is the domain error's class name, shown in the Temporal UI).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.errors import AppError, ServiceUnavailable


@contextlib.asynccontextmanager
async def heartbeating(every: float = 5.0) -> AsyncIterator[None]:
    """Heartbeat every `every` seconds until the block ends, so a worker
    that died mid-activity is noticed within the heartbeat timeout rather
    than the (long) start-to-close timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def permanent_errors() -> Iterator[None]:
    """Raise domain errors (a missing row, an invalid stored definition) as
    non-retryable application errors; an unavailable service stays retryable."""
    try:
        yield
    except ServiceUnavailable:
        raise
    except AppError as exc:
        raise ApplicationError(str(exc.detail), type=type(exc).__name__, non_retryable=True) from None
