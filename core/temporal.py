"""The one way the platform starts or signals a workflow from outside
Temporal, and the lazily connected client of the HTTP processes.

- `start_workflow(client, WorkflowStart(...), task_queue)`: start-or-join
  (`start_or_join` also tells whether it started or joined).
  The id is deterministic (built by `definitions.workflow_ids`), so a start
  whose workflow is already running returns the handle of the running one
  (`WorkflowAlreadyStartedError` is never seen by callers). With
  `start_signal` it is a signal-with-start: the signal goes to the running
  workflow, or a new one is started and receives it first.
- Search attributes are given as a small `{key: value}` mapping of the keys
  in `definitions.search_attributes` and built once, here.
- A Temporal outage (unavailable, connection refused, deadline exceeded,
  throttled, no answer within `timeout` seconds) is raised as
  `core.errors.ServiceUnavailable`, which the HTTP apps answer with 503 and
  a `Retry-After` header. Other RPC errors (a bad
  request, an unregistered search attribute) are bugs and propagate.
- `signal_workflow(client, workflow_id, signal, arg)`: a signal to an open
  run only (False when none is open), for events a running workflow waits
  for but that must never start one.
- `signal_with_start_many(client, starts, task_queue, concurrency=32)`: for
  batched dispatch (the outbox dispatcher). Runs `start_workflow` for every
  item with at most `concurrency` RPCs in flight and returns one
  `StartOutcome` per item, in input order, with either the handle or the
  error; one failed item never fails the others, so the caller can keep
  what succeeded and retry the rest.

Child workflows are started workflow-side with `workflow.start_child_workflow`
and use the same id builders and `search_attributes.typed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.clients import connect_temporal
from core.errors import ServiceUnavailable
from core.settings import Settings
from definitions import search_attributes

# Codes that mean "Temporal is down or overloaded, try again later"
# rather than "this request is wrong".
_OUTAGE_CODES = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}
)

# Bounds one start, retries included: the SDK retries an unreachable server
# for about ten seconds on its own (measured: 9.4 s to give up on a refused
# port), and an HTTP request waiting on a start should answer 503 before
# its client gives up. A start cut short is safe to repeat: ids are
# deterministic, so the repeat joins the run if the first one did start.
DEFAULT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class WorkflowStart:
    """Everything one start (or signal-with-start) needs.

    `workflow` is a workflow's run method (`SendMessageWorkflow.run`) or its
    registered name; `id` comes from `definitions.workflow_ids`.
    """

    workflow: Callable[..., Any] | str
    arg: Any
    id: str
    start_signal: str | None = None
    start_signal_args: Sequence[Any] = ()
    search_attributes: Mapping[SearchAttributeKey[str], object | None] = field(default_factory=dict)
    execution_timeout: timedelta | None = None
    result_type: type | None = None


@dataclass(frozen=True)
class StartOutcome:
    """The result of one item of `signal_with_start_many`: a handle or an error."""

    start: WorkflowStart
    handle: WorkflowHandle[Any, Any] | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the workflow was started, joined or signalled."""
        return self.error is None


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means Temporal could not be reached (worth a retry later)."""
    if isinstance(exc, RPCError):
        return exc.status in _OUTAGE_CODES
    if isinstance(exc, RuntimeError):
        # What a lazily connected client raises when its first connect is refused.
        return str(exc).startswith("Failed client connect")
    return isinstance(exc, (TimeoutError, ConnectionError))


@dataclass(frozen=True)
class Started:
    """What `start_or_join` did: `started` is False when a run with the id
    was already open and was joined instead. (A signal-with-start always
    reports True: Temporal does not say whether it started or signalled.)"""

    handle: WorkflowHandle[Any, Any]
    started: bool


async def start_or_join(
    client: Client, start: WorkflowStart, task_queue: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> Started:
    """Start the workflow, or join the running one with the same id (with
    `start_signal`: signal it, starting it first when none runs).

    Raises ServiceUnavailable when Temporal does not answer within `timeout` seconds.
    """
    call = client.start_workflow(
        start.workflow,  # type: ignore[arg-type]  # a run method or a name
        start.arg,
        id=start.id,
        task_queue=task_queue,
        execution_timeout=start.execution_timeout,
        search_attributes=search_attributes.typed(start.search_attributes),
        start_signal=start.start_signal,
        start_signal_args=start.start_signal_args,
        result_type=start.result_type,
        rpc_timeout=timedelta(seconds=timeout),
    )
    try:
        return Started(await asyncio.wait_for(call, timeout), started=True)
    except WorkflowAlreadyStartedError:
        # Only a plain start gets here: signal-with-start signals the running one.
        return Started(client.get_workflow_handle(start.id, result_type=start.result_type), started=False)
    except Exception as exc:
        if is_outage(exc):
            reason = str(exc) or f"no answer within {timeout:g}s"
            raise ServiceUnavailable(f"Temporal did not take the start of {start.id}: {reason}") from exc
        raise


async def start_workflow(
    client: Client, start: WorkflowStart, task_queue: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> WorkflowHandle[Any, Any]:
    """`start_or_join`, for callers that only need the handle."""
    return (await start_or_join(client, start, task_queue, timeout=timeout)).handle


async def signal_workflow(
    client: Client, workflow_id: str, signal: str, arg: Any, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> bool:
    """Signal the open run with this id, without starting one. Returns False
    when no run with the id is open (it ended: nothing waits for the signal).

    Raises ServiceUnavailable when Temporal does not answer within `timeout` seconds.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        await asyncio.wait_for(handle.signal(signal, arg, rpc_timeout=timedelta(seconds=timeout)), timeout)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        if is_outage(exc):
            raise ServiceUnavailable(f"Temporal did not take the signal to {workflow_id}: {exc}") from exc
        raise
    except TimeoutError as exc:
        raise ServiceUnavailable(
            f"Temporal did not take the signal to {workflow_id} within {timeout:g}s"
        ) from exc
    return True


async def signal_with_start_many(
    client: Client,
    starts: Sequence[WorkflowStart],
    task_queue: str,
    concurrency: int = 32,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[StartOutcome]:
    """Run `start_workflow` for every item, at most `concurrency` at once.

    Returns one outcome per item, in order; errors are reported, not raised.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(start: WorkflowStart) -> StartOutcome:
        async with gate:
            try:
                handle = await start_workflow(client, start, task_queue, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - reported per item; the caller decides what to retry
                return StartOutcome(start, error=exc)
            return StartOutcome(start, handle=handle)

    return list(await asyncio.gather(*(one(start) for start in starts)))


class TemporalConnection:
    """A client for HTTP processes, connected on the first `get()` so the
    API starts (and serves everything else) while Temporal is still coming
    up; retries on the next call after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        """The client, or ServiceUnavailable when Temporal does not answer."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect_temporal(self._settings),
                        timeout=self._settings.temporal_connect_timeout_seconds,
                    )
                # Any connect failure (the bridge's RuntimeError, TimeoutError,
                # a malformed address) means the same to callers: a 503.
                except Exception as exc:  # noqa: BLE001 - re-raised as ServiceUnavailable
                    raise ServiceUnavailable(
                        f"Temporal at {self._settings.temporal_address} is unavailable: {exc}"
                    ) from None
        return self._client
