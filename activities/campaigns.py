"""Activities of `CampaignSendWorkflow`: read the campaign, snapshot its
audience, send a batch, mirror progress, finish. Each is idempotent: the
snapshot is taken once, a batch's messages are keyed by (campaign,
person), progress is written as absolute values."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guards import heartbeating, permanent_errors
from campaigns import repository as repo
from core.errors import NotFound
from db import queries
from db.tables import segments, templates
from definitions.campaigns import (
    BatchResult,
    CampaignAudience,
    CampaignContent,
    CampaignProgress,
    CampaignRef,
    CampaignState,
    FinishInput,
    SendBatchInput,
    SnapshotResult,
)
from delivery import repository as delivery_repo
from delivery.sender import EmailSender, RetryLater
from flows import runs_repository as flow_repo
from segments.compiler import compile_members
from segments.service import parse_definition

# How long a worker trusts a campaign's content (it cannot change once sending).
_CONTENT_SECONDS = 30.0
# How often a running batch looks whether its campaign was paused or cancelled.
_WATCH_SECONDS = 0.5


def _known_zone(name: str | None) -> str | None:
    """`name` when it is a timezone, else None."""
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


class CampaignActivities:
    """Built once in the worker around the shared engine and sender."""

    def __init__(self, engine: AsyncEngine, sender: EmailSender) -> None:
        self._engine = engine
        self._sender = sender
        self._content: dict[Any, tuple[float, Any]] = {}

    @activity.defn(name="begin_campaign")
    async def begin_campaign(self, params: CampaignRef) -> CampaignState:
        """The campaign's status and time (`missing` when it was deleted).
        The row is locked while read: a request that changed it and then
        started or signalled this workflow has committed by then."""
        async with self._engine.begin() as conn:
            row = await repo.lock(conn, params.workspace_id, params.campaign_id)
        if row is None:
            return CampaignState(status="missing")
        return CampaignState(
            status=row["status"],
            scheduled_at=row["scheduled_at"],
            throttle_per_hour=row["throttle_per_hour"],
            local_time=row["local_time"],
        )

    @activity.defn(name="snapshot_campaign")
    async def snapshot_campaign(self, params: CampaignRef) -> SnapshotResult:
        """Number the audience into `campaign_recipients` (once: a retry
        after the commit finds it taken) and mark the campaign sending."""
        async with heartbeating(), self._engine.begin() as conn:
            row = await repo.lock(conn, params.workspace_id, params.campaign_id)
            if row is None:
                raise ApplicationError(
                    f"campaign {params.campaign_id} is gone", type="NotFound", non_retryable=True
                )
            taken = await repo.recipient_count(conn, params.campaign_id)
            if taken is not None:
                return SnapshotResult(total=taken, waves=await repo.waves(conn, params.campaign_id))
            audience = CampaignAudience.model_validate(row["audience"])
            now = datetime.now(UTC)
            with permanent_errors():
                included = [await self._members(conn, params, s, now) for s in audience.segment_ids]
                excluded = [await self._members(conn, params, s, now) for s in audience.exclude_segment_ids]
            local_at, default_zone = None, None
            if row["local_time"] and row["scheduled_at"] is not None:
                local_at = row["scheduled_at"].astimezone(UTC)
                default_zone = _known_zone(await flow_repo.workspace_timezone(conn, params.workspace_id))
            total = await repo.snapshot(
                conn,
                params.workspace_id,
                params.campaign_id,
                included,
                excluded,
                local_at,
                default_zone,
                topic=row["topic"],
            )
            await repo.mark_started(conn, params.workspace_id, params.campaign_id, total, now)
            waves = await repo.waves(conn, params.campaign_id) if local_at is not None else []
        return SnapshotResult(total=total, waves=waves)

    async def _members(self, conn: Any, params: CampaignRef, segment_id: Any, now: datetime) -> Any:
        segment = await queries.get(conn, segments, [segments.c.definition], params.workspace_id, segment_id)
        if segment is None:
            raise NotFound(f"segment {segment_id} of the audience no longer exists")
        return compile_members(parse_definition(segment["definition"]), params.workspace_id, now)

    async def _campaign_content(self, params: SendBatchInput) -> tuple[Any, dict[str, Any], Any, str | None]:
        """(template id, data, content the messages render, topic) of the campaign,
        cached a little per worker; content None when its template is gone."""
        key = params.campaign_id
        hit = self._content.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with self._engine.connect() as conn:
            row = await queries.get(
                conn,
                repo.campaigns,
                [repo.campaigns.c.content, repo.campaigns.c.data, repo.campaigns.c.topic],
                params.workspace_id,
                key,
            )
            if row is None:
                raise ApplicationError(f"campaign {key} is gone", type="NotFound", non_retryable=True)
            content = CampaignContent.model_validate(row["content"])
            resolved: Any = None
            if content.template_id is not None:
                template = await queries.get(
                    conn, templates, delivery_repo.TEMPLATE_COLUMNS, params.workspace_id, content.template_id
                )
                if template is not None:
                    overrides = content.model_dump(exclude_none=True, exclude={"template_id"})
                    resolved = {**dict(template), **overrides}
            else:
                resolved = {
                    "text": None,
                    "from_name": None,
                    "reply_to": None,
                    **content.model_dump(exclude_none=True),
                }
        value = (content.template_id, dict(row["data"]), resolved, row["topic"])
        if len(self._content) > 1000:
            self._content.clear()
        self._content[key] = (time.monotonic() + _CONTENT_SECONDS, value)
        return value

    @activity.defn(name="send_batch")
    async def send_batch(self, params: SendBatchInput) -> BatchResult:
        """Send to the batch's recipients: their message rows in one
        statement, then the sender's batch path (claims and outcomes
        recorded a group at a time). A retry — after a failure, a killed
        worker or a resume — finds the rows and sends only what is still
        queued; the result counts every recipient of the batch once."""
        template_id, data, content, topic = await self._campaign_content(params)
        async with self._engine.begin() as conn:
            message_ids = await repo.batch_messages(
                conn, params.campaign_id, template_id, params.first_seq, params.last_seq, topic
            )
        stop = asyncio.Event()
        if await self._halted(params):
            return BatchResult(stopped=True)
        work = asyncio.ensure_future(
            self._sender.send_batch(params.workspace_id, message_ids, content, data, stop=stop)
        )
        cancelled = False
        async with heartbeating(1.0), self._watching(params, stop):
            # Cancelled (the campaign was paused or cancelled, or this attempt
            # timed out): the group of sends under way finishes — its messages
            # are claimed, cutting it off would lose them — and no other starts.
            # Shielded however often the cancellation comes.
            while not work.done():
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    cancelled = True
                    stop.set()
        if cancelled:
            raise asyncio.CancelledError
        try:
            results = work.result()
        except RetryLater as exc:
            # Some found no provider, or wait for their interrupted send to be
            # looked up (delivery/reconcile.py): the retry handles only those.
            raise ApplicationError(f"some messages are not done yet: {exc}", type="RetryLater") from None
        if stop.is_set():
            return BatchResult(stopped=True)
        counts = Counter(r.status for r in results)
        return BatchResult(
            sent=counts["sent"],
            failed=counts["failed"],
            suppressed=counts["suppressed"],
            unknown=counts["unknown"],
        )

    async def _halted(self, params: SendBatchInput) -> bool:
        async with self._engine.connect() as conn:
            status = await repo.status(conn, params.workspace_id, params.campaign_id)
        return status in ("paused", "cancelled", None)

    @contextlib.asynccontextmanager
    async def _watching(self, params: SendBatchInput, stop: asyncio.Event) -> AsyncIterator[None]:
        """Set `stop` once the campaign is paused or cancelled: the API
        marks the row at once, while the workflow's cancellation reaches an
        activity only with a heartbeat answer (throttled to most of the
        heartbeat timeout). Pause and cancel take effect within a second."""

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(_WATCH_SECONDS)
                if await self._halted(params):
                    stop.set()

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @activity.defn(name="record_campaign_progress")
    async def record_campaign_progress(self, params: FinishInput) -> None:
        """Mirror the workflow's progress into the campaign row."""
        async with self._engine.begin() as conn:
            await repo.record_progress(conn, params.workspace_id, params.campaign_id, params.progress)

    @activity.defn(name="finish_campaign")
    async def finish_campaign(self, params: FinishInput) -> CampaignProgress:
        """The campaign ends with `status`; when cancelled, every recipient
        not sent to (and its message still queued) is marked cancelled."""
        progress = params.progress.model_copy(update={"status": params.status})
        async with self._engine.begin() as conn:
            if params.status == "cancelled":
                progress.cancelled = await repo.cancel_remaining(conn, params.campaign_id)
            await repo.record_progress(conn, params.workspace_id, params.campaign_id, progress)
            await repo.set_status(
                conn,
                params.workspace_id,
                params.campaign_id,
                params.status,
                ("scheduled", "sending", "paused", params.status),
                finished_at=datetime.now(UTC),
                detail=progress.detail,
            )
        return progress


def build(engine: AsyncEngine, sender: EmailSender) -> list[Callable[..., Any]]:
    """The campaign activities around the worker's engine and sender."""
    campaigns = CampaignActivities(engine, sender)
    return [
        campaigns.begin_campaign,
        campaigns.snapshot_campaign,
        campaigns.send_batch,
        campaigns.record_campaign_progress,
        campaigns.finish_campaign,
    ]
