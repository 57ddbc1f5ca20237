"""The `send_email` activity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guards import heartbeating
from definitions.messages import SendEmailInput, SendEmailResult
from delivery.sender import EmailSender, MessageMissing, RetryLater


class EmailActivities:
    """Built once in the worker around a shared sender."""

    def __init__(self, sender: EmailSender) -> None:
        self._sender = sender

    @activity.defn(name="send_email")
    async def send_email(self, params: SendEmailInput) -> SendEmailResult:
        """Send one message row; idempotent across retries (see delivery/sender.py)."""
        try:
            async with heartbeating(params.heartbeat_seconds / 3):
                return await self._sender.send(params.workspace_id, params.message_id)
        except MessageMissing as exc:
            raise ApplicationError(str(exc), type="MessageMissing", non_retryable=True) from None
        except RetryLater as exc:
            # No provider could take it, or its interrupted send waits to be
            # looked up (delivery/reconcile.py): try again with backoff.
            raise ApplicationError(f"not sent yet: {exc}", type="RetryLater") from None


def build(sender: EmailSender) -> list[Callable[..., Any]]:
    """The email activities around the worker's one sender."""
    return [EmailActivities(sender).send_email]
