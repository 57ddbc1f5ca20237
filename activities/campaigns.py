"""Activities of `CampaignSendWorkflow`: read the campaign, snapshot its
audience, send a batch, mirror progress, finish. Each is idempotent: the
snapshot is taken once, a batch's messages are keyed by (campaign,
person), progress is written as absolute values."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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
    ABDecision,
    ABTest,
    BatchResult,
    CampaignAudience,
    CampaignContent,
    CampaignProgress,
    CampaignRef,
    CampaignState,
    FinishInput,
    SendBatchInput,
    SnapshotResult,
    variant_content,
)
from delivery import frequency_cap
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


@dataclass(frozen=True)
class _Content:
    """What a campaign's batches send: the content each variant renders
    (key None: the campaign's own; a value None: its template is gone),
    each variant's own template id, `data` and the topic."""

    template_id: Any
    data: dict[str, Any]
    topic: str | None
    contents: dict[int | None, Any]
    variant_templates: list[Any]
    cap: bool  # the campaign respects the workspace's frequency cap


def variant_rate(counts: Any, metric: str) -> float:
    """A variant's unique open or click rate over its sent messages."""
    if counts is None or not counts["sent"]:
        return 0.0
    part = counts["unique_opens"] if metric == "open_rate" else counts["unique_clicks"]
    return part / counts["sent"]


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
            ab_test = ABTest.model_validate(row["ab_test"]) if row["ab_test"] else None
            wait_seconds = ab_test.wait_seconds if ab_test else 0
            taken = await repo.recipient_count(conn, params.campaign_id)
            if taken is not None:
                return SnapshotResult(
                    total=taken,
                    waves=await repo.waves(conn, params.campaign_id),
                    test_end=await repo.test_group_size(conn, params.campaign_id) if ab_test else 0,
                    wait_seconds=wait_seconds,
                )
            audience = CampaignAudience.model_validate(row["audience"])
            now = datetime.now(UTC)
            with permanent_errors():
                included = [await self._members(conn, params, s, now) for s in audience.segment_ids]
                excluded = [await self._members(conn, params, s, now) for s in audience.exclude_segment_ids]
            local_at, default_zone = None, None
            # The API refuses local time for an A/B test (its group is sent at once).
            if row["local_time"] and row["scheduled_at"] is not None and ab_test is None:
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
                ab_test=ab_test,
            )
            await repo.mark_started(conn, params.workspace_id, params.campaign_id, total, now)
            waves = await repo.waves(conn, params.campaign_id) if local_at is not None else []
            test_end = await repo.test_group_size(conn, params.campaign_id) if ab_test else 0
        return SnapshotResult(total=total, waves=waves, test_end=test_end, wait_seconds=wait_seconds)

    async def _members(self, conn: Any, params: CampaignRef, segment_id: Any, now: datetime) -> Any:
        segment = await queries.get(conn, segments, [segments.c.definition], params.workspace_id, segment_id)
        if segment is None:
            raise NotFound(f"segment {segment_id} of the audience no longer exists")
        return compile_members(parse_definition(segment["definition"]), params.workspace_id, now)

    async def _campaign_content(self, params: SendBatchInput) -> _Content:
        """What the campaign's batches send, cached a little per worker (the
        content cannot change once sending)."""
        key = params.campaign_id
        hit = self._content.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        c = repo.campaigns.c
        async with self._engine.connect() as conn:
            row = await queries.get(
                conn,
                repo.campaigns,
                [c.content, c.data, c.topic, c.ab_test, c.respect_frequency_cap],
                params.workspace_id,
                key,
            )
            if row is None:
                raise ApplicationError(f"campaign {key} is gone", type="NotFound", non_retryable=True)
            content = CampaignContent.model_validate(row["content"])
            ab_test = ABTest.model_validate(row["ab_test"]) if row["ab_test"] else None
            variants: dict[int | None, CampaignContent] = {None: content}
            for index, variant in enumerate(ab_test.variants if ab_test else []):
                variants[index] = variant_content(content, variant)
            contents = {
                index: await self._resolve(conn, params.workspace_id, one) for index, one in variants.items()
            }
        value = _Content(
            template_id=content.template_id,
            data=dict(row["data"]),
            topic=row["topic"],
            contents=contents,
            variant_templates=[variants[i].template_id for i in range(len(variants) - 1)],
            cap=row["respect_frequency_cap"],
        )
        if len(self._content) > 1000:
            self._content.clear()
        self._content[key] = (time.monotonic() + _CONTENT_SECONDS, value)
        return value

    async def _resolve(self, conn: Any, workspace_id: Any, content: CampaignContent) -> Any:
        """The template a content renders (None when its template is gone)."""
        if content.template_id is None:
            return {
                "text": None,
                "from_name": None,
                "reply_to": None,
                **content.model_dump(exclude_none=True),
            }
        template = await queries.get(
            conn, templates, delivery_repo.TEMPLATE_COLUMNS, workspace_id, content.template_id
        )
        if template is None:
            return None
        return {**dict(template), **content.model_dump(exclude_none=True, exclude={"template_id"})}

    @activity.defn(name="send_batch")
    async def send_batch(self, params: SendBatchInput) -> BatchResult:
        """Send to the batch's recipients: their message rows in one
        statement, then the sender's batch path (claims and outcomes
        recorded a group at a time). A retry — after a failure, a killed
        worker or a resume — finds the rows and sends only what is still
        queued; the result counts every recipient of the batch once."""
        content = await self._campaign_content(params)
        async with self._engine.begin() as conn:
            cap = await frequency_cap.workspace_cap(conn, params.workspace_id) if content.cap else None
            if cap is not None:
                await frequency_cap.cap_recipients(
                    conn, params.workspace_id, params.campaign_id, params.first_seq, params.last_seq, cap
                )
            messages = await repo.batch_messages(
                conn,
                params.campaign_id,
                content.template_id,
                params.first_seq,
                params.last_seq,
                content.topic,
                winner=params.winner,
                variant_templates=content.variant_templates,
            )
            capped = await repo.capped_in(conn, params.campaign_id, params.first_seq, params.last_seq)
        by_variant: dict[int | None, list[Any]] = defaultdict(list)
        for message_id, variant in messages:
            if variant not in content.contents:
                raise ApplicationError(
                    f"no content for variant {variant} of campaign {params.campaign_id}",
                    type="ValidationFailed",
                    non_retryable=True,
                )
            by_variant[variant].append(message_id)
        stop = asyncio.Event()
        if await self._halted(params):
            return BatchResult(stopped=True)
        work = asyncio.ensure_future(self._send_variants(params, content, by_variant, stop))
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
            capped=capped,
        )

    async def _send_variants(
        self, params: SendBatchInput, content: _Content, by_variant: dict[int | None, list[Any]], stop: Any
    ) -> list[Any]:
        """The sender's batch path once per content in the batch (one, unless
        an A/B test's group is in it); RetryLater once every group was tried."""
        results: list[Any] = []
        later: RetryLater | None = None
        for variant, message_ids in sorted(by_variant.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
            try:
                results += await self._sender.send_batch(
                    params.workspace_id, message_ids, content.contents[variant], content.data, stop=stop
                )
            except RetryLater as exc:
                later = exc
        if later is not None:
            raise later
        return results

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

    @activity.defn(name="choose_ab_winner")
    async def choose_ab_winner(self, params: CampaignRef) -> ABDecision:
        """Choose the A/B test's winner: the variant with the best unique
        open (or click) rate over its sent messages, the earliest on a tie;
        store it and the time on the campaign. Once: a retry finds it stored."""
        async with self._engine.begin() as conn:
            row = await repo.lock(conn, params.workspace_id, params.campaign_id)
            if row is None or not row["ab_test"]:
                raise ApplicationError(
                    f"campaign {params.campaign_id} has no A/B test", type="NotFound", non_retryable=True
                )
            test = ABTest.model_validate(row["ab_test"])
            found = {v["variant"]: v for v in await repo.variant_stats(conn, params.campaign_id)}
            rates = [variant_rate(found.get(i), test.metric) for i in range(len(test.variants))]
            best = max(range(len(rates)), key=lambda i: (rates[i], -i))
            stored = await repo.record_winner(conn, params.workspace_id, params.campaign_id, best)
        winner = stored["ab_winner"] if stored and stored["ab_winner"] is not None else best
        return ABDecision(winner=winner, rates=rates)

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
        campaigns.choose_ab_winner,
        campaigns.record_campaign_progress,
        campaigns.finish_campaign,
    ]
