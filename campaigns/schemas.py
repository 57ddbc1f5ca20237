"""Request and response models of the campaigns API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.validation import Email, JsonObject, NotNull
from definitions.campaigns import ABMetric, ABTest, CampaignAudience, CampaignContent

MAX_TEST_ADDRESSES = 5
# Topic keys: what the preference center lists (`newsletter`, `product-updates`).
TOPIC_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


def _aware(value: datetime) -> datetime:
    """A time without a zone is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CampaignCreate(_Body):
    """A draft campaign: what to send, to whom, and its topic."""

    name: str = Field(min_length=1, max_length=200)
    content: CampaignContent
    audience: CampaignAudience
    data: JsonObject = Field(default_factory=dict, description="Template variables under `data`.")
    topic: str | None = Field(None, pattern=TOPIC_PATTERN, description="Subscription topic key.")
    throttle_per_hour: int | None = Field(
        None, ge=1, le=100_000_000, description="At most this many emails an hour (domain warm-up)."
    )
    ab_test: ABTest | None = Field(
        None,
        description=(
            "Send 2-4 variants (A..D: subject and/or content) to `test_percent` % of the audience, "
            "wait `wait_seconds`, then send the best by `metric` to the rest."
        ),
    )
    respect_frequency_cap: bool = Field(
        True,
        description="Leave out people at the workspace's frequency cap (recorded `capped`).",
    )


class CampaignUpdate(_Body):
    """Any subset of a draft's or scheduled campaign's fields (409 once sending started)."""

    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=200)
    content: Annotated[CampaignContent | None, NotNull] = None
    audience: Annotated[CampaignAudience | None, NotNull] = None
    data: Annotated[JsonObject | None, NotNull] = None
    topic: str | None = Field(None, pattern=TOPIC_PATTERN)
    throttle_per_hour: int | None = Field(None, ge=1, le=100_000_000)
    ab_test: ABTest | None = Field(None, description="null removes the A/B test.")
    respect_frequency_cap: Annotated[bool | None, NotNull] = None


class ScheduleRequest(_Body):
    """When to send (a time without a zone is UTC); in the past: 422. With
    `local_time`, the same wall-clock time in each recipient's timezone
    (trait `timezone`, else the workspace's, else UTC): `2026-12-01T09:00`
    means 09:00 wherever each person is; zones where that time has passed
    when the send starts are sent to at once."""

    scheduled_at: AwareDatetime
    local_time: bool = False


class TestSendRequest(_Body):
    """Send the rendered campaign to a few addresses now (not counted in its stats)."""

    emails: list[Email] = Field(min_length=1, max_length=MAX_TEST_ADDRESSES)
    variant: str | None = Field(
        None, pattern=r"^[A-D]$", description="An A/B variant's content instead of the campaign's own."
    )


class TestMessage(BaseModel):
    """One test message and its send workflow."""

    email: str
    message_id: uuid.UUID
    workflow_id: str


class TestSendOut(BaseModel):
    """The test messages started."""

    messages: list[TestMessage]


class CampaignOut(BaseModel):
    """A campaign, with the progress of its send."""

    id: uuid.UUID
    name: str
    status: str = Field(description="draft | scheduled | sending | paused | sent | cancelled | failed")
    content: dict[str, Any]
    audience: dict[str, Any]
    data: dict[str, Any]
    topic: str | None
    throttle_per_hour: int | None
    scheduled_at: datetime | None
    local_time: bool
    started_at: datetime | None
    finished_at: datetime | None
    recipients: int
    sent: int
    failed: int
    suppressed: int
    unknown: int
    cancelled: int
    capped: int = Field(description="Left out: at the workspace's frequency cap.")
    respect_frequency_cap: bool
    ab_test: dict[str, Any] | None
    ab_winner: str | None = Field(description="The A/B test's winning variant, once chosen.")
    ab_decided_at: datetime | None
    detail: str | None
    workflow_id: str
    temporal_ui: str
    created_at: datetime
    updated_at: datetime


class CampaignPage(BaseModel):
    """One page of campaigns, newest first."""

    data: list[CampaignOut]
    next_cursor: str | None


class Rates(BaseModel):
    """Ratios (0..1) of sent messages; open/click rates count unique messages."""

    delivery: float
    open: float
    click: float
    bounce: float
    complaint: float
    unsubscribe: float


class ProviderStats(BaseModel):
    """The sends of one provider."""

    provider: str
    sent: int
    delivered: int
    bounced: int
    opened: int
    clicked: int


class HourStats(BaseModel):
    """One hour of the campaign's `Email …` events."""

    hour: datetime
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int


class ABTestStats(BaseModel):
    """An A/B test and where it stands: `testing` (its group is being
    sent), `waiting` (sent; the winner is chosen `wait_seconds` later),
    `decided` (the winner goes to the rest)."""

    metric: ABMetric
    test_percent: int
    wait_seconds: int
    status: Literal["testing", "waiting", "decided"]
    winner: str | None
    decided_at: datetime | None


class VariantStats(BaseModel):
    """One variant's test group; rates are unique opens / clicks over sent."""

    variant: str
    subject: str | None
    recipients: int
    sent: int
    unique_opens: int
    unique_clicks: int
    open_rate: float
    click_rate: float


class CampaignStats(BaseModel):
    """What the dashboard draws: counts, rates, per provider, per hour and
    per A/B variant."""

    status: str
    recipients: int
    sent: int
    delivered: int
    bounced: int
    complained: int
    unsubscribed: int
    failed: int
    suppressed: int
    unknown: int
    cancelled: int
    capped: int
    pending: int
    unique_opens: int
    total_opens: int
    unique_clicks: int
    total_clicks: int
    rates: Rates
    providers: list[ProviderStats]
    hourly: list[HourStats]
    ab_test: ABTestStats | None
    variants: list[VariantStats]


class RecipientOut(BaseModel):
    """One recipient of the snapshot and their message."""

    seq: int
    profile_id: uuid.UUID
    email: str
    status: str = Field(description="pending | cancelled | capped, or the message's status (sent, failed, …)")
    variant: str | None = Field(
        description="A/B test: the variant this person gets (the test's, or the winner for the rest)"
    )
    message_id: uuid.UUID
    provider: str | None
    provider_message_id: str | None
    error: str | None
    sent_at: datetime | None
    opened: bool
    clicked: bool


class RecipientPage(BaseModel):
    """Recipients in snapshot order."""

    data: list[RecipientOut]
    next_cursor: str | None


class CampaignEngagement(BaseModel):
    """Unique opens and clicks of one campaign's sent messages, and their rates."""

    sent: int = 0
    unique_opens: int = 0
    unique_clicks: int = 0
    open_rate: float = 0.0
    click_rate: float = 0.0
