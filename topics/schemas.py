"""Request and response models of the topics API and of a profile's topic choices."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from core.validation import NotNull
from definitions.topics import TopicKey


class TopicCreate(BaseModel):
    """A subscription topic; `key` is what campaigns, flow sends, opt-outs
    and segment conditions name, and never changes."""

    model_config = ConfigDict(extra="forbid")

    key: TopicKey
    name: str = Field(min_length=1, max_length=200, examples=["Newsletter"])
    description: str | None = Field(None, max_length=2000, examples=["News from us, once a month"])


class TopicUpdate(BaseModel):
    """Change the name or description (the key stays)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)


class TopicOut(BaseModel):
    """A topic."""

    id: uuid.UUID
    key: str
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime


class TopicPage(BaseModel):
    """One page of topics; pass `next_cursor` as `cursor` for the next."""

    data: list[TopicOut]
    next_cursor: str | None


class TopicChoice(BaseModel):
    """A person's choice about one topic."""

    model_config = ConfigDict(extra="forbid")

    subscribed: StrictBool


class ProfileTopicOut(BaseModel):
    """A person's choice about one topic, after a change; `changed` is false
    when it already was so (no event is written then)."""

    profile_id: uuid.UUID
    topic: str
    subscribed: bool
    changed: bool
