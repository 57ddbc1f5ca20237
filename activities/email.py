"""The `send_email` activity."""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import activity
from temporalio.exceptions import ApplicationError

from definitions.messages import SendEmailInput, SendEmailResult
from delivery.sender import EmailSender, MessageMissing, RetryLater


class EmailActivities:
    """Built once in the worker around a shared sender."""

    def __init__(self, sender: EmailSender) -> None:
        self._sender = sender

    @activity.defn(name="send_email")
    async def send_email(self, params: SendEmailInput) -> SendEmailResult:
        """Send one message row; idempotent across retries (see delivery/sender.py)."""
        beat = asyncio.create_task(self._heartbeat(params.heartbeat_seconds / 3))
        try:
            return await self._sender.send(params.workspace_id, params.message_id)
        except MessageMissing as exc:
            raise ApplicationError(str(exc), type="MessageMissing", non_retryable=True) from None
        except RetryLater as exc:
            raise ApplicationError(
                f"no provider could take the message: {exc}", type="NoProviderAvailable"
            ) from None
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    @staticmethod
    async def _heartbeat(every: float) -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)
