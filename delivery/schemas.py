"""Request and response models of the email API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.validation import Email, JsonObject, NotNull
from definitions.topics import TopicKey


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- templates -----------------------------------------------------------------


class TemplateCreate(_Body):
    """A template; `text` is derived from `html` when omitted."""

    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=998, examples=["Welcome, {{ profile.first_name }}!"])
    html: str = Field(
        min_length=1,
        max_length=500_000,
        examples=["<p>Hi {{ profile.first_name }}</p><a href='{{ unsubscribe_url }}'>Unsubscribe</a>"],
    )
    text: str | None = Field(None, max_length=500_000)
    from_email: Email = Field(examples=["hello@example.com"])
    from_name: str | None = Field(None, max_length=200)
    reply_to: Email | None = None


class TemplateUpdate(_Body):
    """Any subset of a template's fields."""

    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=200)
    subject: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=998)
    html: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=500_000)
    text: str | None = Field(None, max_length=500_000)
    from_email: Annotated[Email | None, NotNull] = None
    from_name: str | None = Field(None, max_length=200)
    reply_to: Email | None = None


class TemplateOut(BaseModel):
    """A stored template."""

    id: uuid.UUID
    name: str
    subject: str
    html: str
    text: str | None
    from_email: str
    from_name: str | None
    reply_to: str | None
    created_at: datetime
    updated_at: datetime


class TemplatePage(BaseModel):
    """One page of templates."""

    data: list[TemplateOut]
    next_cursor: str | None


class PreviewRequest(_Body):
    """Whom to render for: a profile id or an email (with optional data and event)."""

    profile_id: uuid.UUID | None = None
    email: Email | None = None
    data: JsonObject = Field(default_factory=dict)
    event: JsonObject = Field(default_factory=dict)


class PreviewOut(BaseModel):
    """The rendered parts, and variables that were missing (rendered empty)."""

    subject: str
    html: str
    text: str
    missing_variables: list[str]


class TestSendRequest(_Body):
    """Send a template to one address now."""

    email: Email
    data: JsonObject = Field(default_factory=dict)


# -- providers -----------------------------------------------------------------

ProviderKind = Literal["ses", "sendgrid", "mixmax", "smtp"]

# Per kind: allowed settings, allowed credentials, required credentials.
PROVIDER_FIELDS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "ses": (
        {"region", "endpoint_url", "configuration_set", "timeout", "sns_topic_arn"},
        {"access_key_id", "secret_access_key"},
        set(),
    ),
    "sendgrid": ({"base_url", "timeout", "webhook_public_key"}, {"api_key"}, {"api_key"}),
    "mixmax": ({"base_url", "timeout"}, {"api_token"}, {"api_token"}),
    "smtp": ({"host", "port", "username", "use_tls", "start_tls", "timeout"}, {"password"}, set()),
}


class ProviderCreate(_Body):
    """An email provider. `credentials` are write-only: never returned."""

    name: str = Field(min_length=1, max_length=200)
    kind: ProviderKind
    priority: int = Field(100, ge=0, le=10_000, description="Lower is tried first.")
    rate_limit: float | None = Field(
        None, gt=0, le=100_000, description="Messages per second, shared by all workers."
    )
    enabled: bool = True
    settings: JsonObject = Field(default_factory=dict, examples=[{"base_url": "https://api.sendgrid.com"}])
    credentials: dict[str, str] = Field(default_factory=dict, examples=[{"api_key": "SG.xxx"}])


class ProviderUpdate(_Body):
    """Any subset; `credentials` are merged (a null value removes one)."""

    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=200)
    priority: Annotated[int | None, NotNull] = Field(None, ge=0, le=10_000)
    rate_limit: float | None = Field(None, gt=0, le=100_000, description="null: no limit.")
    enabled: Annotated[bool | None, NotNull] = None
    settings: Annotated[JsonObject | None, NotNull] = None
    credentials: Annotated[dict[str, str | None] | None, NotNull] = None


class ProviderOut(BaseModel):
    """A provider, without secrets."""

    id: uuid.UUID
    name: str
    kind: str
    priority: int
    rate_limit: float | None
    enabled: bool
    settings: dict[str, Any]
    credentials_set: list[str] = Field(
        description="Names of the credentials stored (values are never returned)."
    )
    webhook_url: str | None = Field(description="Where to point the provider's event webhook.")
    created_at: datetime
    updated_at: datetime


class ProviderPage(BaseModel):
    """One page of providers."""

    data: list[ProviderOut]
    next_cursor: str | None


# -- suppressions --------------------------------------------------------------


class SuppressionCreate(_Body):
    """Stop sending to an address, through every provider."""

    email: Email
    reason: str = Field("manual", max_length=100)
    detail: str | None = Field(None, max_length=1000)


class SuppressionOut(BaseModel):
    """A suppressed address."""

    email: str
    reason: str
    detail: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    """One page of suppressions, by email."""

    data: list[SuppressionOut]
    next_cursor: str | None


# -- messages --------------------------------------------------------------------


class MessageCreate(_Body):
    """A transactional email: a template, to a profile or an address."""

    template_id: uuid.UUID
    profile_id: uuid.UUID | None = None
    email: Email | None = None
    data: JsonObject = Field(default_factory=dict, description="Template variables under `data`.")
    campaign_id: str | None = Field(None, max_length=255)
    topic: TopicKey | None = Field(
        None, description="A subscription topic (its key): not sent to a person who left it."
    )
    idempotency_key: str | None = Field(
        None, max_length=255, description="Repeat a request safely: same key, same message."
    )


class MessageEvent(BaseModel):
    """An `Email …` event of the message."""

    name: str
    properties: dict[str, Any]
    occurred_at: datetime


class MessageOut(BaseModel):
    """A message and what happened to it."""

    id: uuid.UUID
    status: str = Field(
        description="queued, sending, sent, delivered, bounced, complained, failed, suppressed, unknown"
    )
    email: str
    profile_id: uuid.UUID | None
    template_id: uuid.UUID | None
    campaign_id: str | None
    topic: str | None = None
    subject: str | None
    provider: str | None
    provider_message_id: str | None
    error: str | None
    attempts: list[dict[str, Any]]
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    workflow_id: str
    events: list[MessageEvent] = Field(default_factory=list)
