"""Activities of `FlowRunWorkflow`: record the enrollment and its steps,
evaluate conditions, compute waits, prepare sends, update profiles, call
webhooks. Each is idempotent: a retry after a commit changes nothing more
(steps and messages are keyed by enrollment and step / node)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import orjson
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.errors import AppError, NotFound
from core.settings import Settings
from db.engine import create_sessionmaker
from definitions.flow_runs import (
    BeginInput,
    BeginResult,
    ConditionInput,
    ConditionResult,
    DateTriggersResult,
    EnterInput,
    EnterResult,
    FinishInput,
    FlowEmailInput,
    FlowEmailPrepared,
    StepInput,
    StepResult,
    UpdateProfileInput,
    WaitResult,
    WaitUntilInput,
    WebhookInput,
    enrollment_id,
)
from definitions.flows import DateTrigger, FlowGraph
from definitions.segments import DATE_PREFIX, MISSING, Condition, get_path, matches
from delivery import frequency_cap
from delivery import service as delivery_service
from delivery.schemas import MessageCreate
from delivery.sender import OVERRIDES_KEY
from flows import runs_repository as repo
from profiles import service as profile_service
from profiles.schemas import ProfileUpdate
from segments.facts import load_facts

_CONDITION = TypeAdapter(Condition)
TIMEZONE_TRAIT = "timezone"
SIGNATURE_HEADER = "X-MP-Signature"


def webhook_signature(secret: str, workspace_id: object, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex>`: HMAC-SHA256 over `<unix>.<body>` with the
    workspace's webhook key (derived from the platform secret)."""
    key = hmac.new(secret.encode(), f"flow-webhook:{workspace_id}".encode(), hashlib.sha256).digest()
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _zone(name: str | None) -> ZoneInfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def seconds_until(now: datetime, zone: ZoneInfo, time_of_day: str, day: datetime | None = None) -> float:
    """Seconds from `now` to the next `time_of_day` in `zone` (on `day`'s
    date when given; 0 when that moment has passed)."""
    hour, minute = (int(x) for x in time_of_day.split(":"))
    local_now = now.astimezone(zone)
    if day is not None:
        target = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        return max(0.0, (target - local_now).total_seconds())
    target = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local_now:
        target = (target + timedelta(days=1)).replace(hour=hour, minute=minute)
    return (target - local_now).total_seconds()


def quiet_seconds(now: datetime, zone: ZoneInfo, start: str, end: str) -> float:
    """Seconds until quiet hours [start, end) end, in `zone`; 0 outside
    them. A window past midnight (21:00–08:00) wraps."""
    local = now.astimezone(zone)
    minutes = local.hour * 60 + local.minute
    s_h, s_m = (int(x) for x in start.split(":"))
    e_h, e_m = (int(x) for x in end.split(":"))
    begin, finish = s_h * 60 + s_m, e_h * 60 + e_m
    inside = begin <= minutes < finish if begin <= finish else (minutes >= begin or minutes < finish)
    if not inside:
        return 0.0
    return seconds_until(now, zone, end)


class FlowActivities:
    """Built once in the worker with the shared engine and an HTTP client."""

    def __init__(self, engine: AsyncEngine, settings: Settings, http: httpx.AsyncClient) -> None:
        self._engine = engine
        self._sessions = create_sessionmaker(engine)
        self._settings = settings
        self._http = http

    @activity.defn(name="begin_flow_enrollment")
    async def begin_flow_enrollment(self, params: BeginInput) -> BeginResult:
        """Record the enrollment, unless re-entry refuses it (runs begun
        before `enter_flow_enrollment`; their first step is recorded next)."""
        run = params.run
        settings = run.graph.settings
        entry = EnterInput(
            enrollment_key=run.enrollment_key,
            version=run.version,
            workflow_id=params.workflow_id,
            trigger_id=run.trigger.id if run.trigger else None,
            payload=run.payload,
            reentry=settings.reentry.value,
            reentry_after_seconds=float(settings.reentry_after_seconds or 0),
            step=StepInput(
                workspace_id=run.workspace_id,
                flow_id=run.flow_id,
                enrollment_id=run.enrollment_id,
                profile_id=run.profile_id,
                seq=1,
                node_id=run.graph.start,
            ),
        )
        async with self._engine.begin() as conn:
            return BeginResult(status=await self._begin(conn, entry))

    @activity.defn(name="enter_flow_enrollment")
    async def enter_flow_enrollment(self, params: EnterInput) -> EnterResult:
        """Record the enrollment, unless re-entry refuses it, and enter its
        first step, in one transaction: a new run's first local activity."""
        async with self._engine.begin() as conn:
            status = await self._begin(conn, params)
            if status != "started":
                return EnterResult(status=status)
            return EnterResult(status=status, step=await self._enter_step(conn, params.step))

    @staticmethod
    async def _begin(conn: AsyncConnection, params: EnterInput) -> str:
        """Insert the enrollment unless re-entry refuses it (repo.begin)."""
        step = params.step
        return await repo.begin(
            conn,
            {
                "id": step.enrollment_id,
                "ws": step.workspace_id,
                "flow": step.flow_id,
                "version": params.version,
                "profile": step.profile_id,
                "key": params.enrollment_key,
                "workflow_id": params.workflow_id,
                "trigger": params.trigger_id,
                "payload": orjson.dumps(params.payload).decode(),
                "reentry": params.reentry,
                "after": params.reentry_after_seconds,
            },
        )

    @activity.defn(name="record_flow_step")
    async def record_flow_step(self, params: StepInput) -> StepResult:
        """Enter a step; stop when the enrollment left or the exit condition holds."""
        async with self._engine.begin() as conn:
            return await self._enter_step(conn, params)

    @staticmethod
    async def _enter_step(conn: AsyncConnection, params: StepInput) -> StepResult:
        status = await repo.enrollment_status(conn, params.workspace_id, params.enrollment_id)
        if status != "running":
            return StepResult(proceed=False, reason="exited")
        if params.exit_condition is not None:
            root = _CONDITION.validate_python(params.exit_condition)
            now = datetime.now(UTC)
            facts = await load_facts(conn, params.workspace_id, [params.profile_id], [root], now)
            person = facts.get(params.profile_id)
            if person is None or matches(root, person, now):
                return StepResult(proceed=False, reason="exited")
        await repo.enter_step(
            conn, params.enrollment_id, params.flow_id, params.seq, params.node_id, params.previous_edge
        )
        return StepResult(proceed=True)

    @activity.defn(name="leave_flow_step")
    async def leave_flow_step(self, params: FinishInput) -> None:
        """Leave a step over its edge (before continuing as new)."""
        async with self._engine.begin() as conn:
            await repo.leave_step(conn, params.enrollment_id, params.seq, params.edge, None)

    @activity.defn(name="finish_flow_enrollment")
    async def finish_flow_enrollment(self, params: FinishInput) -> None:
        """Close the last step and the enrollment."""
        outcome = "failed" if params.status == "failed" else None
        async with self._engine.begin() as conn:
            if params.seq > 0:
                await repo.leave_step(conn, params.enrollment_id, params.seq, params.edge, outcome)
            await repo.finish(
                conn, params.workspace_id, params.enrollment_id, params.status, params.converted
            )

    @activity.defn(name="evaluate_flow_conditions")
    async def evaluate_flow_conditions(self, params: ConditionInput) -> ConditionResult:
        """The first condition that holds for the person now (segment language)."""
        roots = [_CONDITION.validate_python(c) for c in params.conditions]
        now = datetime.now(UTC)
        async with self._engine.connect() as conn:
            facts = await load_facts(conn, params.workspace_id, [params.profile_id], roots, now)
        person = facts.get(params.profile_id)
        if person is None:
            raise ApplicationError(
                f"profile {params.profile_id} is gone", type="NotFound", non_retryable=True
            )
        for index, root in enumerate(roots):
            if matches(root, person, now):
                return ConditionResult(index=index)
        return ConditionResult(index=-1)

    @activity.defn(name="flow_wait_seconds")
    async def flow_wait_seconds(self, params: WaitUntilInput) -> WaitResult:
        """Seconds until the time of day in the person's timezone (trait
        `timezone`, else the workspace's, else UTC), or until a date trait
        plus `offset_days` at that time (0 when it has passed or is missing)."""
        async with self._engine.connect() as conn:
            profile = await repo.profile_row(conn, params.workspace_id, params.profile_id)
            default = await repo.workspace_timezone(conn, params.workspace_id)
        if profile is None:
            raise ApplicationError(
                f"profile {params.profile_id} is gone", type="NotFound", non_retryable=True
            )
        traits = profile["traits"] or {}
        zone = _zone(traits.get(TIMEZONE_TRAIT)) or _zone(default) or ZoneInfo("UTC")
        now = datetime.now(UTC)
        if params.trait is None:
            return WaitResult(seconds=seconds_until(now, zone, params.time_of_day))
        value = get_path(traits, params.trait.split("."))
        if value is MISSING or not isinstance(value, str) or not DATE_PREFIX.match(value):
            return WaitResult(seconds=0)
        try:
            day = datetime.fromisoformat(value[:10]) + timedelta(days=params.offset_days)
        except ValueError:
            return WaitResult(seconds=0)
        return WaitResult(seconds=seconds_until(now, zone, params.time_of_day, day))

    @activity.defn(name="prepare_flow_email")
    async def prepare_flow_email(self, params: FlowEmailInput) -> FlowEmailPrepared:
        """The message row of this enrollment's send at this node (created
        once: its idempotency key is the enrollment and node). Before it:
        a paused flow holds the send (`paused`), quiet hours in the person's
        timezone and a frequency cap in delay mode defer it (`wait`), a
        capped send in skip mode or a person without an address is
        `skipped` (and noted on the step)."""
        key = f"flow:{params.enrollment_id}:{params.node_id}"
        async with self._sessions() as session, session.begin():
            conn = await session.connection()
            if await repo.flow_status(conn, params.workspace_id, params.flow_id) == "paused":
                return FlowEmailPrepared(status="paused")
            existing = await repo.existing_message(conn, params.workspace_id, key)
            if existing is not None:
                return FlowEmailPrepared(status="ready", message_id=existing)
            profile = await repo.profile_row(conn, params.workspace_id, params.profile_id)
            if profile is None or not profile["email"]:
                await repo.set_step_outcome(conn, params.enrollment_id, params.node_id, "no_address")
                return FlowEmailPrepared(status="skipped", reason="no email address")
            now = datetime.now(UTC)
            if params.quiet_hours is not None:
                zone = await self._zone_of(conn, params.workspace_id, profile)
                wait = quiet_seconds(now, zone, params.quiet_hours.start, params.quiet_hours.end)
                if wait > 0:
                    return FlowEmailPrepared(status="wait", reason="quiet hours", retry_seconds=wait)
            cap = None
            if not params.transactional:
                # The flow's own cap, else the workspace's (delivery/frequency_cap.py).
                cap = params.frequency_cap or await frequency_cap.workspace_cap(conn, params.workspace_id)
            if cap is not None:
                recent = await frequency_cap.recent_marketing(
                    conn, params.workspace_id, params.profile_id, cap.period_seconds
                )
                if len(recent) >= cap.max_emails:
                    if cap.mode == "delay":
                        frees = recent[len(recent) - cap.max_emails] + timedelta(seconds=cap.period_seconds)
                        wait = max(1.0, (frees - now).total_seconds())
                        return FlowEmailPrepared(status="wait", reason="frequency cap", retry_seconds=wait)
                    await repo.set_step_outcome(conn, params.enrollment_id, params.node_id, "capped")
                    return FlowEmailPrepared(status="skipped", reason="frequency cap")
            data = {**params.data, OVERRIDES_KEY: params.overrides} if params.overrides else params.data
            body = MessageCreate(
                template_id=params.template_id,
                profile_id=params.profile_id,
                data=data,
                topic=params.topic,
                idempotency_key=key,
            )
            try:
                row, _ = await delivery_service.create_message(
                    session, params.workspace_id, body, topic_must_exist=False
                )
            except NotFound as exc:
                raise ApplicationError(str(exc), type="NotFound", non_retryable=True) from None
            except AppError as exc:
                raise ApplicationError(str(exc), type="FlowDefinitionError", non_retryable=True) from None
            await delivery_service.link_message_to_flow(
                session,
                params.workspace_id,
                row["id"],
                params.flow_id,
                params.version,
                params.node_id,
                params.enrollment_id,
                marketing=not params.transactional,
            )
        return FlowEmailPrepared(status="ready", message_id=row["id"])

    async def _zone_of(self, conn: Any, workspace_id: Any, profile: Any) -> ZoneInfo:
        traits = profile["traits"] or {}
        default = await repo.workspace_timezone(conn, workspace_id)
        return _zone(traits.get(TIMEZONE_TRAIT)) or _zone(default) or ZoneInfo("UTC")

    @activity.defn(name="update_flow_profile")
    async def update_flow_profile(self, params: UpdateProfileInput) -> None:
        """Merge-patch traits through the profiles service (so `Profile
        Updated` and segment re-checks follow, as for the API)."""
        async with self._sessions() as session, session.begin():
            try:
                await profile_service.update_profile(
                    session, params.workspace_id, params.profile_id, ProfileUpdate(traits=params.traits)
                )
            except NotFound as exc:
                raise ApplicationError(str(exc), type="NotFound", non_retryable=True) from None

    @activity.defn(name="announce_date_triggers")
    async def announce_date_triggers(self) -> DateTriggersResult:
        """For every active flow with a date trigger: the people whose date
        trait (± offset, or its anniversary) is today in their timezone and
        whose time of day has passed get a `$date` outbox row; the flows
        consumer enrolls them. The enrollment id is derived from the flow,
        person and date, so a person enters at most once per date however
        often this runs."""
        now = datetime.now(UTC)
        announced = 0
        async with self._engine.begin() as conn:
            for flow in await repo.date_trigger_flows(conn):
                graph = FlowGraph.model_validate(flow["definition"])
                trigger = graph.trigger
                if not isinstance(trigger, DateTrigger):
                    continue
                default = _zone(await repo.workspace_timezone(conn, flow["workspace_id"])) or ZoneInfo("UTC")
                due: list[tuple[Any, uuid.UUID, date]] = []
                for person in await repo.profiles_with_trait(
                    conn, flow["workspace_id"], trigger.trait.split(".")
                ):
                    zone = _zone(person["timezone"]) or default
                    day = date_due(person["value"], trigger, zone, now)
                    if day is not None:
                        cause = f"date:{day.isoformat()}"
                        due.append((person["id"], enrollment_id(flow["id"], person["id"], "", cause), day))
                announced += await repo.announce_dates(conn, flow["workspace_id"], flow["id"], due)
                activity.heartbeat(announced)
        return DateTriggersResult(announced=announced)

    @activity.defn(name="call_flow_webhook")
    async def call_flow_webhook(self, params: WebhookInput) -> int:
        """POST the person, trigger and payload as JSON with an HMAC
        signature; a non-2xx answer or a timeout fails this attempt."""
        async with self._engine.connect() as conn:
            profile = await repo.profile_row(conn, params.workspace_id, params.profile_id)
        document: dict[str, Any] = {
            "flow_id": str(params.flow_id),
            "enrollment_id": str(params.enrollment_id),
            "node_id": params.node_id,
            "profile": dict(profile) if profile is not None else None,
            "trigger": params.trigger.model_dump(mode="json") if params.trigger else None,
            "payload": params.payload,
        }
        body = orjson.dumps(document, default=str)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: webhook_signature(
                self._settings.secret_key, params.workspace_id, timestamp, body
            ),
            "Idempotency-Key": f"{params.enrollment_id}:{params.node_id}",
        }
        try:
            response = await self._http.post(
                params.url, content=body, headers=headers, timeout=params.timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise ApplicationError(f"webhook {params.url} failed: {exc!r}") from None
        if not 200 <= response.status_code < 300:
            raise ApplicationError(f"webhook {params.url} answered {response.status_code}")
        return response.status_code


def date_due(value: Any, trigger: DateTrigger, zone: ZoneInfo, now: datetime) -> date | None:
    """The date a date trigger fires for this trait value, when that is
    today in `zone` and `time_of_day` has passed there; else None. Yearly
    triggers fire on the anniversary (29 February on 28 February in other
    years)."""
    if not isinstance(value, str) or not DATE_PREFIX.match(value):
        return None
    try:
        base = date.fromisoformat(value[:10])
    except ValueError:
        return None
    local = now.astimezone(zone)
    today = local.date()
    if trigger.yearly:
        try:
            base = base.replace(year=today.year)
        except ValueError:  # 29 February
            base = date(today.year, 2, 28)
    if base + timedelta(days=trigger.offset_days) != today:
        return None
    hour, minute = (int(x) for x in trigger.time_of_day.split(":"))
    return today if (local.hour, local.minute) >= (hour, minute) else None


def build(engine: AsyncEngine, settings: Settings, http: httpx.AsyncClient) -> list[Callable[..., Any]]:
    """The flow activities, bound to the worker's engine and HTTP client."""
    flows = FlowActivities(engine, settings, http)
    return [
        flows.begin_flow_enrollment,
        flows.enter_flow_enrollment,
        flows.record_flow_step,
        flows.leave_flow_step,
        flows.finish_flow_enrollment,
        flows.evaluate_flow_conditions,
        flows.flow_wait_seconds,
        flows.prepare_flow_email,
        flows.update_flow_profile,
        flows.call_flow_webhook,
        flows.announce_date_triggers,
    ]
