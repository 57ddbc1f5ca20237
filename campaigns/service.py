"""Campaign operations behind the management API. Services take the session
first and never commit; the request owns the transaction.

Status: draft → scheduled → sending ⇄ paused → sent, or cancelled /
failed. Content, audience and schedule change only in draft and
scheduled. Every send is a `CampaignSendWorkflow` (id `campaign:{id}`):
schedule and send-now start it (or wake the running one to read its
schedule again), pause / resume / cancel are signals to it. Each request
changes the row first — which locks it until the request commits — then
talks to Temporal; the workflow's activities lock the row too, so they
see the committed change, and a request Temporal refuses (503) is
rolled back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from campaigns import repository as repo
from campaigns.schemas import (
    ABTestStats,
    CampaignCreate,
    CampaignEngagement,
    CampaignOut,
    CampaignPage,
    CampaignStats,
    CampaignUpdate,
    HourStats,
    ProviderStats,
    Rates,
    RecipientOut,
    RecipientPage,
    TestMessage,
    TestSendOut,
    TestSendRequest,
    VariantStats,
)
from core.errors import BadRequest, Conflict, NotFound, ValidationFailed
from core.ids import uuid7
from core.pagination import cut_page
from core.settings import Settings
from core.temporal import WorkflowStart, signal_workflow, start_workflow
from db import queries
from db.tables import campaigns, segments, templates
from definitions import workflow_ids
from definitions.campaigns import (
    CANCEL_SIGNAL,
    EDITABLE,
    LIVE,
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    WAKE_SIGNAL,
    ABTest,
    CampaignAudience,
    CampaignContent,
    CampaignSendInput,
    variant_content,
    variant_content_problems,
    variant_name,
)
from definitions.events import SystemEvent
from definitions.messages import SendEmailInput
from definitions.search_attributes import CAMPAIGN_ID, WORKSPACE_ID
from delivery import repository as delivery_repo
from delivery.render import check_template
from delivery.sender import OVERRIDES_KEY
from topics import repository as topics_repo

_NO_LOCAL_AB = "an A/B test is sent at one time: schedule it without local_time"

# A schedule this far in the past is taken as "now" (clocks differ a little).
SCHEDULE_GRACE = timedelta(seconds=60)


def temporal_ui_link(settings: Settings, workflow_id: str) -> str:
    """The run's page in the Temporal web UI."""
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def _out(row: Any, settings: Settings) -> CampaignOut:
    workflow_id = workflow_ids.campaign(row["id"])
    return CampaignOut.model_validate(
        {
            **row,
            "ab_winner": variant_name(row["ab_winner"]),
            "workflow_id": workflow_id,
            "temporal_ui": temporal_ui_link(settings, workflow_id),
        }
    )


async def _row(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID, *, lock: bool = False
) -> Any:
    if lock:
        row = await repo.lock(session, workspace_id, campaign_id)
    else:
        row = await queries.get(session, campaigns, repo.CAMPAIGN_COLUMNS, workspace_id, campaign_id)
    if row is None:
        raise NotFound(f"no campaign {campaign_id} in this workspace")
    return row


async def _check_references(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    content: CampaignContent,
    audience: CampaignAudience,
    topic: str | None = None,
    ab_test: ABTest | None = None,
) -> None:
    """422 naming each missing template, segment or topic, A/B variant
    fields that do not fit the content, or content that does not compile."""
    errors: list[dict[str, str]] = []
    if ab_test is not None:
        errors += [
            {"loc": f"body.ab_test.{loc}", "msg": msg}
            for loc, msg in variant_content_problems(content, ab_test)
        ]
        for index, variant in enumerate(ab_test.variants):
            wanted = variant.template_overrides.template_id if variant.template_overrides else None
            if wanted is not None and not await queries.get(
                session, templates, [templates.c.id], workspace_id, wanted
            ):
                errors.append(
                    {
                        "loc": f"body.ab_test.variants.{index}.template_overrides.template_id",
                        "msg": f"no template {wanted} in this workspace",
                    }
                )
    if topic is not None and not await topics_repo.key_taken(session, workspace_id, topic):
        errors.append({"loc": "body.topic", "msg": f"no topic {topic!r} in this workspace"})
    if content.template_id is not None:
        found = await queries.get(session, templates, [templates.c.id], workspace_id, content.template_id)
        if found is None:
            errors.append(
                {
                    "loc": "body.content.template_id",
                    "msg": f"no template {content.template_id} in this workspace",
                }
            )
    for field in ("segment_ids", "exclude_segment_ids"):
        for index, segment_id in enumerate(getattr(audience, field)):
            if await queries.get(session, segments, [segments.c.id], workspace_id, segment_id) is None:
                errors.append(
                    {
                        "loc": f"body.audience.{field}.{index}",
                        "msg": f"no segment {segment_id} in this workspace",
                    }
                )
    if errors:
        raise ValidationFailed(errors)
    if content.template_id is None or content.subject is not None:
        await check_template(subject=content.subject, html=content.html, text=content.text)
    for index, variant in enumerate(ab_test.variants if ab_test else []):
        overrides = variant.template_overrides
        subject = variant.subject or (overrides.subject if overrides else None)
        if subject or variant.html or variant.text:
            try:
                await check_template(subject=subject, html=variant.html, text=variant.text)
            except ValidationFailed as exc:  # named under its variant (the form shows it there)
                where = f"body.ab_test.variants.{index}."
                raise ValidationFailed(
                    [{**d, "loc": str(d.get("loc", "")).replace("body.", where, 1)} for d in exc.detail]
                ) from None


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


async def list_campaigns(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    cursor: str | None,
    limit: int,
    settings: Settings,
    statuses: Sequence[str] | None = None,
) -> CampaignPage:
    """Newest first (those in one of `statuses`, when given)."""
    where = [campaigns.c.status.in_(list(statuses))] if statuses is not None else []
    data, next_cursor = await queries.newest_page(
        session,
        campaigns,
        repo.CAMPAIGN_COLUMNS,
        workspace_id,
        cursor,
        limit,
        lambda r: _out(r, settings),
        where,
    )
    return CampaignPage(data=data, next_cursor=next_cursor)


async def create_campaign(
    session: AsyncSession, workspace_id: uuid.UUID, body: CampaignCreate, settings: Settings
) -> CampaignOut:
    """Store a draft; its template and segments must exist (422), its name be free (409)."""
    await _check_references(session, workspace_id, body.content, body.audience, body.topic, body.ab_test)
    if await queries.name_taken(session, campaigns, workspace_id, body.name):
        raise Conflict(f"a campaign named {body.name!r} exists")
    values = {
        "id": uuid7(),
        "workspace_id": workspace_id,
        "name": body.name,
        "content": _dump(body.content),
        "audience": _dump(body.audience),
        "data": body.data,
        "topic": body.topic,
        "throttle_per_hour": body.throttle_per_hour,
        "ab_test": _dump(body.ab_test) if body.ab_test else None,
        "respect_frequency_cap": body.respect_frequency_cap,
    }
    try:
        row = await queries.insert_row(session, campaigns, repo.CAMPAIGN_COLUMNS, values)
    except IntegrityError:
        raise Conflict(f"a campaign named {body.name!r} exists") from None
    return _out(row, settings)


async def get_campaign(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID, settings: Settings
) -> CampaignOut:
    """One campaign with its progress."""
    return _out(await _row(session, workspace_id, campaign_id), settings)


async def update_campaign(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    body: CampaignUpdate,
    settings: Settings,
) -> CampaignOut:
    """Change a draft or scheduled campaign; 409 once its send started."""
    row = await _row(session, workspace_id, campaign_id, lock=True)
    if row["status"] not in EDITABLE:
        raise Conflict(f"campaign is {row['status']}; it can no longer be edited")
    values = body.model_dump(exclude_unset=True)
    content = body.content or CampaignContent.model_validate(row["content"])
    audience = body.audience or CampaignAudience.model_validate(row["audience"])
    if "ab_test" in values:
        ab_test = body.ab_test
    else:
        ab_test = ABTest.model_validate(row["ab_test"]) if row["ab_test"] else None
    if ab_test is not None and row["local_time"]:
        raise ValidationFailed([{"loc": "body.ab_test", "msg": _NO_LOCAL_AB}])
    await _check_references(session, workspace_id, content, audience, values.get("topic"), ab_test)
    if "ab_test" in values:
        values["ab_test"] = _dump(ab_test) if ab_test else None
    if "content" in values:
        values["content"] = _dump(content)
    if "audience" in values:
        values["audience"] = _dump(audience)
    if values.get("name") and await queries.name_taken(
        session, campaigns, workspace_id, values["name"], campaign_id
    ):
        raise Conflict(f"a campaign named {values['name']!r} exists")
    updated = await queries.update_row(
        session, campaigns, repo.CAMPAIGN_COLUMNS, workspace_id, campaign_id, values
    )
    return _out(updated, settings)


async def delete_campaign(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    client: Client | None,
    settings: Settings,
) -> None:
    """Delete a campaign that is not sending (409 while sending or paused:
    cancel it first). A scheduled one's waiting workflow is cancelled."""
    row = await _row(session, workspace_id, campaign_id, lock=True)
    if row["status"] in ("sending", "paused"):
        raise Conflict(f"campaign is {row['status']}; cancel it before deleting it")
    if row["status"] == "scheduled" and client is not None:
        await signal_workflow(client, workflow_ids.campaign(campaign_id), CANCEL_SIGNAL, None)
    await queries.delete_row(session, campaigns, workspace_id, campaign_id)


# -- the send -------------------------------------------------------------------


async def schedule(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    at: datetime | None,
    client: Client,
    settings: Settings,
    *,
    local_time: bool = False,
) -> CampaignOut:
    """Send at `at` (None: now). A draft becomes scheduled and its
    workflow starts; a scheduled one is moved (its workflow reads the new
    time). A time in the past is a 422."""
    now = datetime.now(UTC)
    if local_time and at is not None:
        # The wall-clock time as written, stored as if UTC; each recipient's
        # instant is worked out in their zone when the audience is snapshotted.
        # It is in the past once it has passed in the last zone (UTC-12).
        at = at.replace(tzinfo=UTC)
    if at is not None and at < now - (timedelta(hours=12) if local_time else SCHEDULE_GRACE):
        raise ValidationFailed([{"loc": "body.scheduled_at", "msg": "is in the past"}])
    row = await _row(session, workspace_id, campaign_id, lock=True)
    if row["status"] not in EDITABLE:
        raise Conflict(f"campaign is {row['status']}; only a draft or scheduled campaign can be scheduled")
    ab_test = ABTest.model_validate(row["ab_test"]) if row["ab_test"] else None
    if ab_test is not None and local_time:
        raise ValidationFailed([{"loc": "body.local_time", "msg": _NO_LOCAL_AB}])
    await _check_references(
        session,
        workspace_id,
        CampaignContent.model_validate(row["content"]),
        CampaignAudience.model_validate(row["audience"]),
        ab_test=ab_test,
    )
    updated = await repo.set_status(
        session,
        workspace_id,
        campaign_id,
        "scheduled",
        EDITABLE,
        scheduled_at=at if local_time and at is not None else max(at or now, now),
        local_time=local_time and at is not None,
    )
    start = WorkflowStart(
        "CampaignSendWorkflow",
        CampaignSendInput(
            workspace_id=workspace_id,
            campaign_id=campaign_id,
            batch_size=settings.campaign_batch_size,
            window=settings.campaign_window,
            heartbeat_seconds=settings.campaign_heartbeat_seconds,
        ),
        id=workflow_ids.campaign(campaign_id),
        start_signal=WAKE_SIGNAL,
        start_signal_args=[None],
        search_attributes={WORKSPACE_ID: workspace_id, CAMPAIGN_ID: campaign_id},
    )
    await start_workflow(client, start, settings.temporal_task_queue)
    return _out(updated, settings)


async def _control(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    client: Client,
    settings: Settings,
    *,
    status: str,
    from_statuses: tuple[str, ...],
    signal: str,
) -> CampaignOut:
    row = await _row(session, workspace_id, campaign_id, lock=True)
    if row["status"] not in from_statuses:
        raise Conflict(f"campaign is {row['status']}; {signal} needs it {' or '.join(from_statuses)}")
    updated = await repo.set_status(session, workspace_id, campaign_id, status, from_statuses)
    delivered = await signal_workflow(client, workflow_ids.campaign(campaign_id), signal, None)
    if not delivered and status != "cancelled":
        raise Conflict(f"the send of campaign {campaign_id} is not running")
    return _out(updated, settings)


async def pause(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID, client: Client, settings: Settings
) -> CampaignOut:
    """sending → paused: no new batch starts (those in flight finish)."""
    return await _control(
        session,
        workspace_id,
        campaign_id,
        client,
        settings,
        status="paused",
        from_statuses=("sending",),
        signal=PAUSE_SIGNAL,
    )


async def resume(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID, client: Client, settings: Settings
) -> CampaignOut:
    """paused → sending, from where it stopped."""
    return await _control(
        session,
        workspace_id,
        campaign_id,
        client,
        settings,
        status="sending",
        from_statuses=("paused",),
        signal=RESUME_SIGNAL,
    )


async def cancel(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID, client: Client, settings: Settings
) -> CampaignOut:
    """scheduled, sending or paused → cancelled: nothing more is sent;
    recipients not yet sent to are marked cancelled."""
    return await _control(
        session,
        workspace_id,
        campaign_id,
        client,
        settings,
        status="cancelled",
        from_statuses=LIVE,
        signal=CANCEL_SIGNAL,
    )


async def send_test(
    sessionmaker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    campaign_id: uuid.UUID,
    body: TestSendRequest,
    client: Client,
    settings: Settings,
) -> TestSendOut:
    """Send the rendered campaign (or one of its A/B variants) to a few
    addresses through the ordinary transactional path (one
    `SendMessageWorkflow` each). The messages
    carry no campaign id, so the campaign's stats never count them, and no
    profile (the addresses may belong to nobody)."""
    async with sessionmaker() as session, session.begin():
        row = await _row(session, workspace_id, campaign_id)
        content = CampaignContent.model_validate(row["content"])
        await _check_references(
            session, workspace_id, content, CampaignAudience.model_validate(row["audience"])
        )
        if body.variant is not None:
            test = ABTest.model_validate(row["ab_test"]) if row["ab_test"] else None
            chosen = next((v for v in test.variants if v.name == body.variant), None) if test else None
            if chosen is None:
                raise ValidationFailed([{"loc": "body.variant", "msg": f"no variant {body.variant!r}"}])
            content = variant_content(content, chosen)
        overrides = {k: v for k, v in _dump(content).items() if k != "template_id"}
        made = []
        for email in dict.fromkeys(body.emails):
            message_id = uuid7()
            message, _ = await delivery_repo.create_message(
                session,
                {
                    "id": message_id,
                    "workspace_id": workspace_id,
                    "idempotency_key": f"campaign-test:{campaign_id}:{message_id}",
                    "profile_id": None,
                    "email": email,
                    "template_id": content.template_id,
                    "campaign_id": None,
                    "topic": row["topic"],
                    "data": {**row["data"], OVERRIDES_KEY: overrides},
                },
            )
            made.append((email, message["id"]))
    out = []
    for email, message_id in made:
        start = WorkflowStart(
            "SendMessageWorkflow",
            SendEmailInput(workspace_id=workspace_id, message_id=message_id),
            id=workflow_ids.message(message_id),
            search_attributes={WORKSPACE_ID: workspace_id, CAMPAIGN_ID: campaign_id},
        )
        await start_workflow(client, start, settings.temporal_task_queue)
        out.append(
            TestMessage(email=email, message_id=message_id, workflow_id=workflow_ids.message(message_id))
        )
    return TestSendOut(messages=out)


# -- reads ----------------------------------------------------------------------

_EVENT_NAMES = {
    SystemEvent.EMAIL_SENT.value: "sent",
    SystemEvent.EMAIL_DELIVERED.value: "delivered",
    SystemEvent.EMAIL_OPENED.value: "opened",
    SystemEvent.EMAIL_CLICKED.value: "clicked",
    SystemEvent.EMAIL_BOUNCED.value: "bounced",
    SystemEvent.EMAIL_UNSUBSCRIBED.value: "unsubscribed",
}


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


async def stats(session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID) -> CampaignStats:
    """Counts from the campaign's counters; totals, unsubscribes and
    the hourly series from the campaign's `Email …` events."""
    row = await _row(session, workspace_id, campaign_id)
    counts = dict(await repo.stats(session, campaign_id))
    providers = [
        ProviderStats.model_validate(dict(p)) for p in await repo.provider_stats(session, campaign_id)
    ]
    hours: dict[datetime, dict[str, int]] = {}
    totals = {"opened": 0, "clicked": 0, "unsubscribed": 0}
    if row["started_at"] is not None:
        for e in await repo.event_stats(
            session, workspace_id, campaign_id, row["started_at"], list(_EVENT_NAMES)
        ):
            kind = _EVENT_NAMES[e["name"]]
            hours.setdefault(e["hour"], dict.fromkeys(_EVENT_NAMES.values(), 0))[kind] += e["n"]
            if kind in totals:
                totals[kind] += e["n"] if kind != "unsubscribed" else e["messages"]
    sent = counts["sent"]
    return CampaignStats(
        status=row["status"],
        **counts,
        unsubscribed=totals["unsubscribed"],
        total_opens=totals["opened"],
        total_clicks=totals["clicked"],
        rates=Rates(
            delivery=_ratio(counts["delivered"], sent),
            open=_ratio(counts["unique_opens"], sent),
            click=_ratio(counts["unique_clicks"], sent),
            bounce=_ratio(counts["bounced"], sent),
            complaint=_ratio(counts["complained"], sent),
            unsubscribe=_ratio(totals["unsubscribed"], sent),
        ),
        providers=providers,
        hourly=[HourStats(hour=hour, **values) for hour, values in sorted(hours.items())],
        **await _ab_stats(session, workspace_id, row),
    )


async def _ab_stats(session: AsyncSession, workspace_id: uuid.UUID, row: Any) -> dict[str, Any]:
    """The A/B test's state and each variant's test group (none without a test)."""
    if not row["ab_test"]:
        return {"ab_test": None, "variants": []}
    test = ABTest.model_validate(row["ab_test"])
    content = CampaignContent.model_validate(row["content"])
    found = {v["variant"]: v for v in await repo.variant_stats(session, row["id"])}
    variants = []
    for index, variant in enumerate(test.variants):
        counts = found.get(index) or {"recipients": 0, "sent": 0, "unique_opens": 0, "unique_clicks": 0}
        variants.append(
            VariantStats(
                variant=variant.name,
                subject=await _variant_subject(session, workspace_id, variant_content(content, variant)),
                recipients=counts["recipients"],
                sent=counts["sent"],
                unique_opens=counts["unique_opens"],
                unique_clicks=counts["unique_clicks"],
                open_rate=_ratio(counts["unique_opens"], counts["sent"]),
                click_rate=_ratio(counts["unique_clicks"], counts["sent"]),
            )
        )
    if row["ab_winner"] is not None:
        status = "decided"
    elif row["started_at"] is not None and found and not any(v["pending"] for v in found.values()):
        status = "waiting"
    else:
        status = "testing"
    return {
        "ab_test": ABTestStats(
            metric=test.metric,
            test_percent=test.test_percent,
            wait_seconds=test.wait_seconds,
            status=status,
            winner=variant_name(row["ab_winner"]),
            decided_at=row["ab_decided_at"],
        ),
        "variants": variants,
    }


async def _variant_subject(
    session: AsyncSession, workspace_id: uuid.UUID, content: CampaignContent
) -> str | None:
    """The subject (a template) a variant's messages render: its own, else its template's."""
    if content.subject is not None or content.template_id is None:
        return content.subject
    template = await queries.get(session, templates, [templates.c.subject], workspace_id, content.template_id)
    return template["subject"] if template else None


def _seq_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 10:
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page")
    return int(cursor)


async def recipients(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_id: uuid.UUID, cursor: str | None, limit: int
) -> RecipientPage:
    """The snapshot in order, each with its message's status and engagement."""
    await _row(session, workspace_id, campaign_id)
    rows = await repo.recipients_page(session, campaign_id, _seq_cursor(cursor), limit + 1)
    data, next_cursor = cut_page(
        rows,
        limit,
        lambda r: RecipientOut.model_validate({**r, "variant": variant_name(r["variant"])}),
        cursor_after=lambda r: str(r.seq),
    )
    return RecipientPage(data=data, next_cursor=next_cursor)


async def engagement(
    session: AsyncSession, workspace_id: uuid.UUID, campaign_ids: list[uuid.UUID]
) -> dict[uuid.UUID, CampaignEngagement]:
    """Sent, unique opens and clicks (and rates) of each of these campaigns
    of the workspace (others are left out); what the dashboard's list shows."""
    mine = await repo.owned(session, workspace_id, campaign_ids)
    out = {campaign_id: CampaignEngagement() for campaign_id in mine}
    for r in await repo.list_engagement(session, mine):
        out[r["campaign_id"]] = CampaignEngagement(
            sent=r["sent"],
            unique_opens=r["unique_opens"],
            unique_clicks=r["unique_clicks"],
            open_rate=_ratio(r["unique_opens"], r["sent"]),
            click_rate=_ratio(r["unique_clicks"], r["sent"]),
        )
    return out
