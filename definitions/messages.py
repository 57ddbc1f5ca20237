"""Inputs and results of the email-sending workflow and activity."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field


class SendEmailInput(BaseModel):
    """Send the message row `message_id` (created by the caller)."""

    workspace_id: uuid.UUID
    message_id: uuid.UUID
    heartbeat_seconds: float = Field(
        10.0, ge=1, le=300, description="Heartbeat timeout of the send activity."
    )


class SendEmailResult(BaseModel):
    """Where the message ended: sent, failed, suppressed or unknown."""

    message_id: uuid.UUID
    status: str
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
