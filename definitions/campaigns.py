"""Campaigns: content, audience and the inputs, signals and results of
`CampaignSendWorkflow` and its activities. Pure (pydantic + stdlib):
imported by workflow code in the sandbox.

Payloads stay small: ids, sequence-number cursors and counts — never a
recipient list (the audience is snapshotted into `campaign_recipients` in
PostgreSQL and walked by sequence number)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SEGMENTS = 20
# Recipients a `send_batch` activity handles (a few hundred: one statement
# inserts their message rows, one records their outcomes per chunk).
DEFAULT_BATCH_SIZE = 500
# `send_batch` activities in flight at once per campaign.
DEFAULT_WINDOW = 4
# Batches a run handles before continuing as new (history stays short).
BATCHES_PER_RUN = 200

# Signals and the query of CampaignSendWorkflow.
PAUSE_SIGNAL = "pause"
RESUME_SIGNAL = "resume"
CANCEL_SIGNAL = "cancel"
WAKE_SIGNAL = "wake"  # the schedule changed (rescheduled, or "send now"): read it again
PROGRESS_QUERY = "progress"

CampaignStatus = Literal["draft", "scheduled", "sending", "paused", "sent", "cancelled", "failed"]
# Statuses in which the content and audience may still change.
EDITABLE = ("draft", "scheduled")
# Not finished: scheduled, under way or paused (the overview's running campaigns).
RUNNING = ("scheduled", "sending", "paused")
# Statuses a send workflow may be running in.
LIVE = ("scheduled", "sending", "paused")
FINAL = ("sent", "cancelled", "failed")


def message_key(campaign_id: object, profile_id: object) -> str:
    """The idempotency key of a campaign's message to one person: a retried
    batch, a killed worker or a resumed campaign finds the same row."""
    return f"campaign:{campaign_id}:{profile_id}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CampaignContent(_Strict):
    """A template (`template_id`, with optional overrides of its subject,
    sender and reply-to) or inline `subject` + `html` (+ `text`) with
    `from_email`. Subject, HTML and text are Jinja2 templates with
    `profile`, `data` and `unsubscribe_url`."""

    template_id: uuid.UUID | None = None
    subject: str | None = Field(None, min_length=1, max_length=998)
    html: str | None = Field(None, min_length=1, max_length=500_000)
    text: str | None = Field(None, max_length=500_000)
    from_email: str | None = Field(None, min_length=3, max_length=254)
    from_name: str | None = Field(None, max_length=200)
    reply_to: str | None = Field(None, min_length=3, max_length=254)

    @model_validator(mode="after")
    def _one_source(self) -> CampaignContent:
        if self.template_id is None:
            missing = [f for f in ("subject", "html", "from_email") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"give a template_id, or inline content with {', '.join(missing)}")
        elif self.html is not None or self.text is not None:
            raise ValueError("html and text come from the template; give inline content without template_id")
        for name in ("from_email", "reply_to"):
            value = getattr(self, name)
            if value is not None and ("@" not in value or " " in value.strip()):
                raise ValueError(f"{name} is not an email address")
        return self


# -- A/B tests -------------------------------------------------------------------

MAX_VARIANTS = 4
VARIANT_NAMES = "ABCD"
MAX_AB_WAIT_SECONDS = 30 * 24 * 3600
ABMetric = Literal["open_rate", "click_rate"]


def variant_name(index: int | None) -> str | None:
    """The name of variant `index` ("A" for 0, "B" for 1, …)."""
    return None if index is None else VARIANT_NAMES[index]


class VariantTemplateOverrides(_Strict):
    """What a variant of a template campaign changes: another template,
    and/or the subject, sender or reply-to."""

    template_id: uuid.UUID | None = None
    subject: str | None = Field(None, min_length=1, max_length=998)
    from_email: str | None = Field(None, min_length=3, max_length=254)
    from_name: str | None = Field(None, max_length=200)
    reply_to: str | None = Field(None, min_length=3, max_length=254)


class ABVariant(_Strict):
    """One variant: its name ("A".."D", in order) and what it changes in
    the campaign's content — `subject` (any campaign), `html` / `text`
    (inline content) or `template_overrides` (template content). A variant
    that changes nothing sends the campaign's own content (a control)."""

    name: str = Field(pattern=r"^[A-D]$")
    subject: str | None = Field(None, min_length=1, max_length=998)
    html: str | None = Field(None, min_length=1, max_length=500_000)
    text: str | None = Field(None, max_length=500_000)
    template_overrides: VariantTemplateOverrides | None = None


class ABTest(_Strict):
    """Send `variants` to `test_percent` % of the audience (split evenly,
    each person's variant fixed by a hash of campaign and person), wait
    `wait_seconds`, then send the variant with the best unique `metric`
    (ties: the earliest variant) to everyone else."""

    variants: list[ABVariant] = Field(min_length=2, max_length=MAX_VARIANTS)
    test_percent: int = Field(ge=1, le=100)
    wait_seconds: int = Field(ge=60, le=MAX_AB_WAIT_SECONDS)
    metric: ABMetric = "open_rate"

    @model_validator(mode="after")
    def _named_in_order(self) -> ABTest:
        names = [v.name for v in self.variants]
        if names != list(VARIANT_NAMES[: len(names)]):
            raise ValueError(f"variants are named {', '.join(VARIANT_NAMES[: len(names)])} in that order")
        return self


def variant_content_problems(content: CampaignContent, test: ABTest) -> list[tuple[str, str]]:
    """(location under `ab_test`, message) of each variant field that does
    not fit the campaign's content: html/text replace inline content only,
    template_overrides apply to template content only."""
    problems = []
    for index, variant in enumerate(test.variants):
        where = f"variants.{index}"
        if content.template_id is None:
            if variant.template_overrides is not None:
                problems.append(
                    (f"{where}.template_overrides", "the campaign has inline content: give subject/html/text")
                )
        else:
            for name in ("html", "text"):
                if getattr(variant, name) is not None:
                    problems.append(
                        (
                            f"{where}.{name}",
                            f"{name} comes from the template: use template_overrides.template_id",
                        )
                    )
        overrides = variant.template_overrides
        for name in ("from_email", "reply_to"):
            value = getattr(overrides, name) if overrides else None
            if value is not None and ("@" not in value or " " in value.strip()):
                problems.append((f"{where}.template_overrides.{name}", f"{name} is not an email address"))
    return problems


def variant_content(content: CampaignContent, variant: ABVariant) -> CampaignContent:
    """The campaign's content with the variant's changes."""
    changes = variant.model_dump(exclude_none=True, include={"subject", "html", "text"})
    if variant.template_overrides is not None:
        changes |= variant.template_overrides.model_dump(exclude_none=True)
    return content.model_copy(update=changes)


class CampaignAudience(_Strict):
    """Members of any of `segment_ids`, minus members of any of
    `exclude_segment_ids`, evaluated when the send starts. Suppressed
    addresses (bounces, complaints, unsubscribes) are always left out;
    one email per address."""

    segment_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_SEGMENTS)
    exclude_segment_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_SEGMENTS)

    @model_validator(mode="after")
    def _disjoint(self) -> CampaignAudience:
        if set(self.segment_ids) & set(self.exclude_segment_ids):
            raise ValueError("a segment is both included and excluded")
        return self


class CampaignRef(BaseModel):
    """One campaign of one workspace."""

    workspace_id: uuid.UUID
    campaign_id: uuid.UUID


class CampaignState(BaseModel):
    """What `begin_campaign` read: the status and when to send."""

    status: str
    scheduled_at: datetime | None = None
    throttle_per_hour: int | None = None
    local_time: bool = False


class SnapshotResult(BaseModel):
    """The audience snapshot: recipients numbered 1..total (by due time
    for a local-time campaign: `waves` are (first seq, due) in order). An
    A/B test's group comes first: 1..`test_end`, then `wait_seconds`
    before the winner goes to the rest."""

    total: int
    waves: list[tuple[int, datetime]] = Field(default_factory=list)
    test_end: int = 0
    wait_seconds: int = 0


class ABDecision(BaseModel):
    """The winning variant's index (0: A) and each variant's rate."""

    winner: int
    rates: list[float] = Field(default_factory=list)


class CampaignProgress(BaseModel):
    """Where a send stands; the workflow's `progress` query and the campaign row's counters."""

    status: str = "scheduled"
    cursor: int = 1  # the next sequence number to hand to a batch
    total: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    unknown: int = 0
    cancelled: int = 0
    capped: int = 0
    detail: str | None = None
    # A/B test: its group is 1..test_end (0: no test); the winner is None
    # until chosen, `wait_seconds` after the group was sent.
    test_end: int = 0
    wait_seconds: int = 0
    winner: int | None = None
    # Batches stopped by a pause part-way, to hand out again (first, last).
    redo: list[tuple[int, int]] = Field(default_factory=list)
    # Local-time campaigns: (first seq, due) of each group of recipients due together.
    waves: list[tuple[int, datetime]] = Field(default_factory=list)

    def due(self, seq: int) -> tuple[datetime | None, int | None]:
        """When recipient `seq` is due (None: now) and where the next wave starts."""
        due, following = None, None
        for first, at in self.waves:
            if first <= seq:
                due = at
            elif following is None:
                following = first
        return due, following

    def add(self, result: BatchResult) -> None:
        """Count a finished batch."""
        self.sent += result.sent
        self.failed += result.failed
        self.suppressed += result.suppressed
        self.unknown += result.unknown
        self.capped += result.capped

    def limit(self) -> int:
        """The last sequence number that may be sent now: an A/B test's
        group until the winner is chosen, then everyone."""
        return self.test_end if self.test_end and self.winner is None else self.total


class CampaignSendInput(BaseModel):
    """A run of `CampaignSendWorkflow`; `progress` is set when it continued
    as new (the snapshot exists, `progress.cursor` is where to go on)."""

    workspace_id: uuid.UUID
    campaign_id: uuid.UUID
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=5000)
    window: int = Field(DEFAULT_WINDOW, ge=1, le=64)
    batches_per_run: int = Field(BATCHES_PER_RUN, ge=1, le=10_000)
    heartbeat_seconds: float = Field(30.0, ge=1, le=600)
    progress: CampaignProgress | None = None
    paused: bool = False
    throttle_per_hour: int | None = Field(None, ge=1)


# A local-time campaign starts this long before its wall-clock time (the
# first zones, UTC+14, reach it then); zones whose time has passed when the
# send starts are sent to at once.
LOCAL_LEAD = timedelta(hours=14)

# A throttled send hands out at most this many seconds' worth of recipients
# at a time, then waits (a Temporal timer) until their share of the hour passed.
THROTTLE_STEP_SECONDS = 10


def throttled_batch(batch_size: int, throttle_per_hour: int) -> int:
    """Recipients per batch of a send limited to `throttle_per_hour`."""
    return max(1, min(batch_size, throttle_per_hour * THROTTLE_STEP_SECONDS // 3600))


class SendBatchInput(BaseModel):
    """Send to recipients `first_seq`..`last_seq` of a campaign's snapshot."""

    workspace_id: uuid.UUID
    campaign_id: uuid.UUID
    first_seq: int
    last_seq: int
    # A/B test: the winning variant, which recipients outside the test group get.
    winner: int | None = None


class BatchResult(BaseModel):
    """Where the batch's recipients ended (each counted once, whatever the
    attempts: a retry reports the rows an earlier attempt finished)."""

    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    unknown: int = 0
    capped: int = 0  # over the workspace's frequency cap: not sent
    # The campaign was paused or cancelled meanwhile: the batch stopped
    # after its current group of sends; hand its range out again on resume.
    stopped: bool = False


class FinishInput(BaseModel):
    """End the campaign with `status`; recipients from `progress.cursor` on
    are marked cancelled when it is `cancelled`."""

    workspace_id: uuid.UUID
    campaign_id: uuid.UUID
    status: str
    progress: CampaignProgress
