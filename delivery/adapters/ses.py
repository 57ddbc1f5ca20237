"""Amazon SES through boto3's `sesv2` client (raw MIME, so our headers
travel). The endpoint is configurable, which is how tests point it at moto
in server mode.

No lookup (ProviderLookup): SES keeps no queryable record of sent messages
by an id of ours (only event destinations push them), so a send
interrupted mid-call with SES enabled ends `unknown` (delivery/reconcile.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from delivery.adapters.base import OutgoingEmail, ProviderError
from delivery.destinations import PrivateDestination, check_host

# Provider-side trouble: another provider may deliver.
_RETRYABLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "LimitExceededException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServerError",
    "SendingPausedException",
    "AccountSuspendedException",
    "RequestTimeout",
}


class SESAdapter:
    """Settings: `region`, `endpoint_url`, `configuration_set`, `timeout`.
    Secrets: `access_key_id`, `secret_access_key` (else the environment's)."""

    kind = "ses"

    def __init__(
        self, settings: dict[str, Any], secrets: dict[str, Any], *, allow_private_hosts: bool = False
    ) -> None:
        timeout = float(settings.get("timeout", 10))
        # Only an overridden endpoint needs checking: AWS's own are public.
        endpoint = settings.get("endpoint_url") or None
        self._endpoint_host = None if allow_private_hosts or not endpoint else urlsplit(endpoint).hostname
        self._client = boto3.session.Session().client(
            "sesv2",
            region_name=settings.get("region", "us-east-1"),
            endpoint_url=settings.get("endpoint_url") or None,
            aws_access_key_id=secrets.get("access_key_id") or None,
            aws_secret_access_key=secrets.get("secret_access_key") or None,
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
        )
        self._configuration_set = settings.get("configuration_set")

    def _send_sync(self, email: OutgoingEmail) -> str:
        params: dict[str, Any] = {
            "FromEmailAddress": email.sender,
            "Destination": {"ToAddresses": [email.to]},
            "Content": {"Raw": {"Data": email.mime().as_bytes()}},
            "EmailTags": [{"Name": "mp_message_id", "Value": str(email.message_id)}],
        }
        if self._configuration_set:
            params["ConfigurationSetName"] = self._configuration_set
        return self._client.send_email(**params)["MessageId"]

    async def send(self, email: OutgoingEmail) -> str:
        if self._endpoint_host is not None:
            try:
                await check_host(self._endpoint_host)
            except (PrivateDestination, OSError, TimeoutError) as exc:
                raise ProviderError(f"ses endpoint refused: {exc}", retryable=True) from None
        try:
            return await asyncio.to_thread(self._send_sync, email)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            retryable = code in _RETRYABLE_CODES or status >= 500 or status == 429
            raise ProviderError(f"ses {code}: {exc}", retryable=retryable) from None
        except (
            EndpointConnectionError,
            ConnectTimeoutError,
            ReadTimeoutError,
            BotoCoreError,
            OSError,
        ) as exc:
            raise ProviderError(f"ses unreachable: {exc!r}", retryable=True) from None

    async def close(self) -> None:
        self._client.close()
