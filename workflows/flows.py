"""`FlowRunWorkflow`: one enrollment of one person in one flow version, a
small interpreter over the version's graph (definitions/flows.py).

The enrollment and its first step are recorded in PostgreSQL, where
re-entry rules hold: by the outbox consumer before it starts the run (most
runs: `FlowRunInput.entered`), else by the run's first local activity
(`enter_flow_enrollment`). The run then walks the graph node by node: each step is
recorded (`record_flow_step`, which also stops the run when the enrollment
was exited meanwhile or the flow's exit condition holds) and shown in the
Temporal UI through the `FlowStep` search attribute. Waits are timers;
events reach the run as `event` signals from the outbox dispatcher, only
for the names this version listens for (wait-for-event, goal, exit
events), and ids it has seen are dropped. A goal event converts and ends
the run; an exit event or an `exit` signal ends it at once, even mid-wait.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from definitions import workflow_ids
    from definitions.flow_runs import (
        EVENT_SIGNAL,
        EXIT_SIGNAL,
        RESUME_SIGNAL,
        TRIGGER_SIGNAL,
        BeginInput,
        BeginResult,
        ConditionInput,
        ConditionResult,
        EnterInput,
        EnterResult,
        ExitRequest,
        FinishInput,
        FlowEmailInput,
        FlowEmailPrepared,
        FlowEvent,
        FlowResume,
        FlowRunInput,
        FlowRunResult,
        StepInput,
        StepResult,
        UpdateProfileInput,
        WaitResult,
        WaitUntilInput,
        WebhookInput,
        key_value,
    )
    from definitions.flows import (
        BranchNode,
        EventMatch,
        ExitNode,
        SendEmailNode,
        SplitNode,
        UpdateProfileNode,
        WaitForEventNode,
        WaitNode,
        WaitUntilNode,
        WebhookNode,
        split_choice,
    )
    from definitions.messages import SendEmailInput, SendEmailResult
    from definitions.search_attributes import FLOW_STEP
    from definitions.segments import MISSING, compare, get_path
    from workflows.messages import SendMessageWorkflow

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=["FlowDefinitionError", "NotFound"],
)
_SHORT = timedelta(seconds=30)
_PAUSED_RECHECK = timedelta(minutes=1)
_BUFFERED_EVENTS = 200  # events waiting for a wait_for_event node
_SEEN_EVENTS = 2000
_LOCAL_BOOKKEEPING = "local-bookkeeping"  # workflow.patched id: see _step_activity
_ENTER_FIRST_STEP = "enter-first-step"  # workflow.patched id: see _begin


class _Stopped(Exception):
    """The run must end now (exit, goal) — raised out of a node."""


def _matches(match: EventMatch | WaitForEventNode, event: FlowEvent) -> bool:
    if event.name != match.name:
        return False
    today = event.occurred_at.date()
    return all(compare(f, event.properties, today) for f in match.where)


@workflow.defn(name="FlowRunWorkflow")
class FlowRunWorkflow:
    """One enrollment; see the module docstring."""

    @workflow.init
    def __init__(self, params: FlowRunInput) -> None:
        self._params = params
        self._stop: str | None = None
        self._converted = False
        self._node: str | None = None
        self._resumes = 0
        resume = params.resume
        self._entered_at = resume.entered_at if resume else workflow.now()
        self._buffer: list[FlowEvent] = list(resume.buffered) if resume else []
        self._seen: dict[str, None] = {str(i): None for i in (resume.seen if resume else [])}

    def _first_time(self, event_id: object) -> bool:
        key = str(event_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > _SEEN_EVENTS:
            del self._seen[next(iter(self._seen))]
        return True

    @workflow.signal(name=TRIGGER_SIGNAL)
    def trigger(self, event: FlowEvent) -> None:
        """The event that enrolled the person; a trigger while already
        enrolled changes nothing (one enrollment at a time)."""
        self._first_time(event.id)

    @workflow.signal(name=EVENT_SIGNAL)
    def event(self, event: FlowEvent) -> None:
        """An event of this person that the version listens for."""
        if not self._first_time(event.id) or event.occurred_at < self._entered_at:
            return
        settings = self._params.graph.settings
        other_key = self._other_key(event)
        if not other_key and settings.goal is not None and _matches(settings.goal, event):
            window = settings.goal_within_seconds
            if window is None or event.occurred_at <= self._entered_at + timedelta(seconds=window):
                self._converted = True
                self._stop = self._stop or "converted"
                return
        if not other_key and any(_matches(m, event) for m in settings.exit_events):
            self._stop = self._stop or "exited"
            return
        self._buffer.append(event)
        del self._buffer[:-_BUFFERED_EVENTS]

    @workflow.signal(name=EXIT_SIGNAL)
    def exit(self, request: ExitRequest) -> None:
        """Leave now (the API, an archive, a merge)."""
        self._stop = self._stop or "exited"

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self, request: ExitRequest) -> None:
        """The flow was activated again: a send held by the pause may go."""
        self._resumes += 1

    @workflow.query(name="state")
    def state(self) -> dict[str, Any]:
        """Where the run stands."""
        return {"node": self._node, "stopping": self._stop, "buffered": len(self._buffer)}

    @workflow.run
    async def run(self, params: FlowRunInput) -> FlowRunResult:
        p = params
        first: StepResult | None = None  # the first step, entered with the enrollment
        if p.resume is None:
            if p.entered:  # the outbox consumer recorded the enrollment and entered the first step
                first = StepResult(proceed=True)
            else:
                begun, first = await self._begin(p)
                if begun != "started":
                    return FlowRunResult(enrollment_id=p.enrollment_id, status=begun)
            node_id: str | None = p.graph.start
            seq, edge = 0, None
        else:  # continued as new: the step before was left already
            node_id, seq, edge = p.resume.node_id, p.resume.seq - 1, None
        nodes = {n.id: n for n in p.graph.nodes}
        status, last = "completed", None
        try:
            while node_id is not None:
                if self._stop:
                    break
                seq += 1
                if not (p.entered and seq == 1):  # an entered run was started showing its first node
                    workflow.upsert_search_attributes([FLOW_STEP.value_set(node_id)])
                if first is not None:
                    step, first = first, None
                else:
                    step = await self._step_activity(
                        "record_flow_step",
                        self._step(seq, node_id, edge),
                        StepResult,
                    )
                if not step.proceed:
                    self._stop = self._stop or step.reason or "exited"
                    break
                self._node = last = node_id
                edge, node_id = await self._run_node(nodes[node_id])
                if node_id is not None and workflow.info().is_continue_as_new_suggested():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    await self._leave(seq, edge)
                    workflow.continue_as_new(self._resumed(node_id, seq + 1))
        except _Stopped:
            edge = None
        except (ActivityError, ChildWorkflowError) as exc:
            await self._finish("failed", seq, edge)
            raise ApplicationError(
                f"flow step {last} failed: {exc.cause or exc}", non_retryable=True
            ) from exc
        if self._stop:
            status = self._stop
        if self._converted:
            status = "converted"
        await self._finish(status, seq, edge)
        return FlowRunResult(enrollment_id=p.enrollment_id, status=status, last_node=last)

    # -- steps ------------------------------------------------------------------

    async def _begin(self, p: FlowRunInput) -> tuple[str, StepResult | None]:
        """Record the enrollment (re-entry is decided in PostgreSQL).

        Since `enter-first-step`, one local activity records it and enters
        the first node's step in the same transaction, and its input leaves
        the graph out: a new run's first workflow task holds one database
        transaction instead of two. Runs begun before keep
        `begin_flow_enrollment` and a `record_flow_step` for the first node."""
        workflow_id = workflow.info().workflow_id
        if workflow.patched(_ENTER_FIRST_STEP):
            settings = p.graph.settings
            entered = await self._step_activity(
                "enter_flow_enrollment",
                EnterInput(
                    enrollment_key=p.enrollment_key,
                    version=p.version,
                    workflow_id=workflow_id,
                    trigger_id=p.trigger.id if p.trigger else None,
                    payload=p.payload,
                    reentry=settings.reentry.value,
                    reentry_after_seconds=float(settings.reentry_after_seconds or 0),
                    step=self._step(1, p.graph.start, None),
                ),
                EnterResult,
            )
            return entered.status, entered.step
        begun = await self._step_activity(
            "begin_flow_enrollment", BeginInput(run=p, workflow_id=workflow_id), BeginResult
        )
        return begun.status, None

    def _step(self, seq: int, node_id: str, edge: str | None) -> StepInput:
        p = self._params
        condition = p.graph.settings.exit_condition
        return StepInput(
            workspace_id=p.workspace_id,
            flow_id=p.flow_id,
            enrollment_id=p.enrollment_id,
            profile_id=p.profile_id,
            seq=seq,
            node_id=node_id,
            previous_edge=edge,
            exit_condition=condition.model_dump(mode="json") if condition is not None else None,
        )

    async def _leave(self, seq: int, edge: str | None) -> None:
        await self._step_activity(
            "leave_flow_step",
            FinishInput(
                workspace_id=self._params.workspace_id,
                enrollment_id=self._params.enrollment_id,
                status="running",
                seq=seq,
                edge=edge,
            ),
        )

    def _resumed(self, node_id: str, seq: int) -> FlowRunInput:
        resume = FlowResume(
            node_id=node_id,
            seq=seq,
            entered_at=self._entered_at,
            buffered=self._buffer,
            seen=list(self._seen)[-_SEEN_EVENTS:],
        )
        return self._params.model_copy(update={"resume": resume})

    async def _finish(self, status: str, seq: int, edge: str | None) -> None:
        await self._step_activity(
            "finish_flow_enrollment",
            FinishInput(
                workspace_id=self._params.workspace_id,
                enrollment_id=self._params.enrollment_id,
                status=status,
                seq=seq,
                edge=edge,
                converted=self._converted,
            ),
        )

    async def _step_activity(self, name: str, arg: Any, result_type: type | None = None) -> Any:
        """One of the run's short bookkeeping and evaluation activities,
        all with the same timeout and retry policy.

        They run as local activities: inside the workflow task that needs
        them, recorded as one marker, instead of a scheduled task and a
        second workflow task each. An enrollment's first steps (begin,
        record the step, the first node's wait) then cost the Temporal
        server one workflow task instead of three and two activity tasks
        (docs/benchmarks.md, Flows). They are short, idempotent database
        writes, so running again after a crash is as safe as a retry.
        Runs begun before the change (no `local-bookkeeping` marker in
        their history) keep scheduling ordinary activities."""
        if workflow.patched(_LOCAL_BOOKKEEPING):
            return await workflow.execute_local_activity(
                name, arg, result_type=result_type, start_to_close_timeout=_SHORT, retry_policy=_RETRY
            )
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=_SHORT, retry_policy=_RETRY
        )

    async def _held(self) -> None:
        """The flow is paused: wait for a `resume` signal (sent when it is
        activated again) or look again after a while, whichever is first;
        an exit still ends the run at once."""
        resumes = self._resumes
        try:
            await workflow.wait_condition(
                lambda: self._stop is not None or self._resumes != resumes, timeout=_PAUSED_RECHECK
            )
        except TimeoutError:
            return
        if self._stop is not None:
            raise _Stopped

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake (and stop) on an exit or a goal."""
        if seconds <= 0:
            return
        try:
            await workflow.wait_condition(lambda: self._stop is not None, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            return
        raise _Stopped

    async def _run_node(self, node: Any) -> tuple[str, str | None]:
        """Run one node; returns the edge taken and the next node (None: the end)."""
        p = self._params
        if isinstance(node, WaitNode):
            await self._sleep(node.seconds)
            return "next", node.next
        if isinstance(node, WaitUntilNode):
            wait = await self._step_activity(
                "flow_wait_seconds",
                WaitUntilInput(
                    workspace_id=p.workspace_id,
                    profile_id=p.profile_id,
                    time_of_day=node.time_of_day,
                    trait=node.trait,
                    offset_days=node.offset_days,
                ),
                WaitResult,
            )
            await self._sleep(wait.seconds)
            return "next", node.next
        if isinstance(node, WaitForEventNode):
            return await self._wait_for_event(node)
        if isinstance(node, BranchNode):
            chosen = await self._step_activity(
                "evaluate_flow_conditions",
                ConditionInput(
                    workspace_id=p.workspace_id,
                    profile_id=p.profile_id,
                    conditions=[b.condition.model_dump(mode="json") for b in node.branches],
                ),
                ConditionResult,
            )
            if chosen.index < 0:
                return "otherwise", node.otherwise
            return f"branch:{chosen.index}", node.branches[chosen.index].next
        if isinstance(node, SplitNode):
            index = split_choice(str(p.enrollment_id), node.id, [path.percent for path in node.paths])
            return f"split:{index}", node.paths[index].next
        if isinstance(node, SendEmailNode):
            return await self._send_email(node)
        if isinstance(node, UpdateProfileNode):
            await self._step_activity(
                "update_flow_profile",
                UpdateProfileInput(workspace_id=p.workspace_id, profile_id=p.profile_id, traits=node.traits),
            )
            return "next", node.next
        if isinstance(node, WebhookNode):
            return await self._webhook(node)
        if isinstance(node, ExitNode):
            return "exit", None
        raise ApplicationError(f"unknown node type {type(node).__name__}", non_retryable=True)

    async def _wait_for_event(self, node: WaitForEventNode) -> tuple[str, str | None]:
        deadline = workflow.now() + timedelta(seconds=node.timeout_seconds)
        key = self._params.enrollment_key
        key_path = self._key_path()

        def found() -> FlowEvent | None:
            for event in self._buffer:
                if not _matches(node, event):
                    continue
                if node.match_key:
                    value = get_path(event.properties, key_path)
                    if value is MISSING or key_value(value) != key:
                        continue
                return event
            return None

        while True:
            event = found()
            if event is not None:
                self._buffer.remove(event)
                return "event", node.on_event
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                return "timeout", node.on_timeout
            seen = len(self._buffer)
            try:
                await workflow.wait_condition(
                    lambda seen=seen: self._stop is not None or len(self._buffer) != seen,
                    timeout=timedelta(seconds=remaining),
                )
            except TimeoutError:
                return "timeout", node.on_timeout
            if self._stop is not None:
                raise _Stopped

    def _other_key(self, event: FlowEvent) -> bool:
        """Keyed enrollments: the event carries a different key value (another
        cart's purchase converts or exits only that cart's enrollment); an
        event without the key property concerns the person as a whole."""
        if not self._params.enrollment_key:
            return False
        value = get_path(event.properties, self._key_path())
        return value is not MISSING and key_value(value) != self._params.enrollment_key

    def _key_path(self) -> list[str]:
        trigger = self._params.graph.trigger
        path = getattr(trigger, "enrollment_key", None) or ""
        return path.split(".")[1:]  # below `properties`

    async def _send_email(self, node: SendEmailNode) -> tuple[str, str | None]:
        p = self._params
        request = FlowEmailInput(
            workspace_id=p.workspace_id,
            flow_id=p.flow_id,
            version=p.version,
            node_id=node.id,
            enrollment_id=p.enrollment_id,
            profile_id=p.profile_id,
            template_id=node.template_id,
            overrides=node.overrides.model_dump(exclude_none=True),
            transactional=node.transactional,
            data={"payload": p.payload, "trigger": p.trigger.properties if p.trigger else {}},
            frequency_cap=None if node.transactional else p.graph.settings.frequency_cap,
            quiet_hours=None if node.transactional else p.graph.settings.quiet_hours,
            topic=node.topic,
        )
        while True:
            prepared = await self._step_activity(
                "prepare_flow_email",
                request,
                FlowEmailPrepared,
            )
            if prepared.status == "paused":
                await self._held()
                continue
            if prepared.status == "wait":
                await self._sleep(prepared.retry_seconds)
                continue
            break
        if prepared.status == "ready" and prepared.message_id is not None:
            await workflow.execute_child_workflow(
                SendMessageWorkflow.run,
                SendEmailInput(workspace_id=p.workspace_id, message_id=prepared.message_id),
                id=workflow_ids.message(prepared.message_id),
                result_type=SendEmailResult,
            )
        return "next", node.next

    async def _webhook(self, node: WebhookNode) -> tuple[str, str | None]:
        p = self._params
        try:
            await workflow.execute_activity(
                "call_flow_webhook",
                WebhookInput(
                    workspace_id=p.workspace_id,
                    flow_id=p.flow_id,
                    enrollment_id=p.enrollment_id,
                    profile_id=p.profile_id,
                    node_id=node.id,
                    url=node.url,
                    timeout_seconds=node.timeout_seconds,
                    trigger=p.trigger,
                    payload=p.payload,
                ),
                start_to_close_timeout=timedelta(seconds=node.timeout_seconds + 5),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=1),
                    maximum_attempts=node.max_attempts,
                ),
            )
        except ActivityError:
            if node.on_error is None:
                raise
            return "error", node.on_error
        return "next", node.next


# FlowRunWorkflow alone: the sandbox executes this module again for every
# new run, so other workflows live elsewhere (workflows/flow_dates.py).
WORKFLOWS = [FlowRunWorkflow]
