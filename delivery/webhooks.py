"""Provider webhooks: verify, then map to engagement records.

- SES publishes through SNS. Every SNS message is signed (RSA with SHA1 for
  SignatureVersion 1, SHA256 for 2) by a certificate at `SigningCertURL`,
  which is only fetched from hosts matching `SNS_CERT_URL_PATTERN`
  (AWS's own by default). Subscription confirmations are confirmed by
  fetching their `SubscribeURL` (same host rule). With the provider's
  `sns_topic_arn` setting, only messages of that topic are accepted.
- SendGrid's Event Webhook signs `timestamp + body` with ECDSA (P-256,
  SHA256); the public key is the provider's `webhook_public_key` setting.

A signed timestamp (SendGrid's header, SNS's `Timestamp`) must lie within
`max_age` seconds of now either side, so a captured event cannot be
replayed later. Events only reach messages (and suppressions) of the
webhook provider's own workspace: our message ids travel in every tracking
link, so an id alone proves nothing about who may act on it.

A message that fails verification changes nothing (the endpoint answers 401).
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery import repository as repo
from delivery.engagement import record

log = logging.getLogger(__name__)

SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


# Every SNS envelope field is a string; anything else is refused up front
# (a list as SigningCertURL used to reach the URL check and fail with a 500).
SNS_STRING_FIELDS = (
    "Type",
    "MessageId",
    "Message",
    "Subject",
    "Timestamp",
    "TopicArn",
    "Token",
    "SubscribeURL",
    "SigningCertURL",
    "Signature",
    "SignatureVersion",
)


class WebhookRejected(Exception):
    """The payload failed verification."""


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical text SNS signs."""
    fields = SNS_SIGNED_FIELDS.get(message.get("Type", ""))
    if fields is None:
        raise WebhookRejected(f"unknown SNS message type {message.get('Type')!r}")
    return "".join(f"{k}\n{message[k]}\n" for k in fields if k in message).encode()


class SNSVerifier:
    """Checks SNS signatures; certificates are fetched once per URL."""

    def __init__(self, http: httpx.AsyncClient, cert_url_pattern: str) -> None:
        self._http = http
        self._pattern = re.compile(cert_url_pattern)
        self._certs: dict[str, x509.Certificate] = {}

    def allowed(self, url: str) -> bool:
        """Whether a certificate / subscribe URL is on an allowed host."""
        return bool(self._pattern.match(url or ""))

    async def verify(self, message: dict[str, Any]) -> None:
        """Raise WebhookRejected unless the message is signed by SNS."""
        url = message.get("SigningCertURL", "")
        if not self.allowed(url):
            raise WebhookRejected("signing certificate URL is not an SNS URL")
        cert = self._certs.get(url)
        if cert is None:
            try:
                response = await self._http.get(url)
                response.raise_for_status()
                cert = x509.load_pem_x509_certificate(response.content)
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                raise WebhookRejected(f"could not load the signing certificate: {exc}") from None
            self._certs[url] = cert
        digest = hashes.SHA256() if str(message.get("SignatureVersion")) == "2" else hashes.SHA1()
        try:
            signature = base64.b64decode(message.get("Signature", ""))
            cert.public_key().verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), digest)  # type: ignore[union-attr]
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise WebhookRejected("bad SNS signature") from exc


def check_fresh(signed_at: datetime | None, max_age: float, now: datetime | None = None) -> None:
    """Raise WebhookRejected unless the signed time is within `max_age`
    seconds of now (either side: clocks drift, replays come late)."""
    if signed_at is None:
        raise WebhookRejected("missing or unreadable signed timestamp")
    skew = abs(((now or datetime.now(UTC)) - signed_at).total_seconds())
    if skew > max_age:
        raise WebhookRejected(
            f"signed timestamp is {int(skew)} s away from now; at most {int(max_age)} s is accepted"
        )


def _parse_time(value: Any) -> datetime | None:
    """A signed timestamp (Unix seconds or ISO 8601) as an aware datetime; None if unreadable."""
    try:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def verify_sendgrid(
    public_key: str | None, signature: str | None, timestamp: str | None, body: bytes
) -> None:
    """Raise WebhookRejected unless SendGrid signed `timestamp + body`."""
    if not public_key or not signature or not timestamp:
        raise WebhookRejected("missing signature, timestamp or configured public key")
    try:
        if "BEGIN PUBLIC KEY" in public_key:
            key = serialization.load_pem_public_key(public_key.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(public_key))
        key.verify(base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr,call-arg]
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise WebhookRejected("bad SendGrid signature") from exc


def _when(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


class WebhookHandler:
    """Applies verified provider events to messages."""

    def __init__(
        self, engine: AsyncEngine, http: httpx.AsyncClient, sns: SNSVerifier, max_age: float = 600.0
    ) -> None:
        self._engine = engine
        self._http = http
        self._sns = sns
        self._max_age = max_age

    async def _provider(self, provider_id: Any, kind: str) -> Any:
        async with self._engine.connect() as conn:
            row = await repo.provider_by_id(conn, provider_id)
        if row is None or row["kind"] != kind:
            raise WebhookRejected("unknown provider")
        return row

    # -- SES via SNS ------------------------------------------------------------

    async def ses(self, provider_id: Any, body: bytes) -> str:
        """Handle one SNS delivery; returns what was done."""
        provider = await self._provider(provider_id, "ses")
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WebhookRejected("body is not JSON") from None
        if not isinstance(message, dict):
            raise WebhookRejected("body is not an SNS message")
        wrong = [name for name in SNS_STRING_FIELDS if name in message and not isinstance(message[name], str)]
        if wrong:
            raise WebhookRejected(f"SNS fields must be strings: {', '.join(wrong)}")
        await self._sns.verify(message)
        check_fresh(_parse_time(message.get("Timestamp")), self._max_age)
        # Any AWS account can have SNS sign a message; the topic says whose it is.
        topic = provider["settings"].get("sns_topic_arn")
        if topic and message.get("TopicArn") != topic:
            raise WebhookRejected("the message is from another SNS topic than the provider's sns_topic_arn")
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            url = message.get("SubscribeURL", "")
            if not self._sns.allowed(url):
                raise WebhookRejected("subscribe URL is not an SNS URL")
            (await self._http.get(url)).raise_for_status()
            return "subscription confirmed"
        if kind != "Notification":
            return "ignored"
        try:
            event = orjson.loads(message["Message"])
        except (orjson.JSONDecodeError, KeyError):
            return "ignored: not an SES event"
        if not isinstance(event, dict):
            return "ignored: not an SES event"
        return await self._ses_event(
            provider["workspace_id"], event, f"ses:{message['MessageId']}", _when(message.get("Timestamp"))
        )

    async def _ses_event(self, workspace_id: uuid.UUID, event: dict[str, Any], key: str, at: datetime) -> str:
        kind = event.get("eventType") or event.get("notificationType")
        mail = event.get("mail") or {}
        async with self._engine.begin() as conn:
            message = None
            tagged = (mail.get("tags") or {}).get("mp_message_id")
            if tagged:
                try:
                    message = await repo.message(conn, workspace_id, _uuid(tagged[0]))
                except ValueError:
                    message = None
            if message is None and mail.get("messageId"):
                message = await repo.message_by_provider_id(conn, workspace_id, "ses", str(mail["messageId"]))
            if message is None:
                return "ignored: unknown message"
            if kind == "Delivery":
                await record(conn, message, "delivered", at, key)
            elif kind == "Bounce":
                bounce = event.get("bounce") or {}
                hard = bounce.get("bounceType") == "Permanent"
                detail = f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
                await record(
                    conn,
                    message,
                    "bounced",
                    at,
                    key,
                    {"bounce_type": "hard" if hard else "soft", "detail": detail},
                    suppress_reason="hard_bounce" if hard else None,
                )
            elif kind == "Complaint":
                await record(
                    conn, message, "complained", at, key, {"detail": "complaint"}, suppress_reason="complaint"
                )
            elif kind == "Open":
                await record(conn, message, "opened", at, key, {"source": "ses"})
            elif kind == "Click":
                await record(
                    conn,
                    message,
                    "clicked",
                    at,
                    key,
                    {"source": "ses", "url": (event.get("click") or {}).get("link")},
                )
            else:
                return f"ignored: {kind}"
        return f"recorded {kind}"

    # -- SendGrid -------------------------------------------------------------------

    async def sendgrid(
        self, provider_id: Any, body: bytes, signature: str | None, timestamp: str | None
    ) -> int:
        """Handle a batch of SendGrid events; returns how many were recorded."""
        provider = await self._provider(provider_id, "sendgrid")
        verify_sendgrid(provider["settings"].get("webhook_public_key"), signature, timestamp, body)
        check_fresh(_parse_time(timestamp), self._max_age)
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WebhookRejected("body is not JSON") from None
        recorded = 0
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and await self._sendgrid_event(provider["workspace_id"], item):
                recorded += 1
        return recorded

    async def _sendgrid_event(self, workspace_id: uuid.UUID, item: dict[str, Any]) -> bool:
        kind = item.get("event")
        at = _when(item.get("timestamp"))
        key = f"sendgrid:{item.get('sg_event_id') or orjson.dumps(item).hex()[:64]}"
        async with self._engine.begin() as conn:
            message = None
            if item.get("mp_message_id"):
                try:
                    message = await repo.message(conn, workspace_id, _uuid(item["mp_message_id"]))
                except ValueError:
                    message = None
            if message is None and item.get("sg_message_id"):
                message = await repo.message_by_provider_id(
                    conn, workspace_id, "sendgrid", str(item["sg_message_id"]).split(".")[0]
                )
            if message is None:
                return False
            if kind == "delivered":
                return await record(conn, message, "delivered", at, key)
            if kind == "bounce":
                hard = item.get("type", "bounce") == "bounce"
                return await record(
                    conn,
                    message,
                    "bounced",
                    at,
                    key,
                    {"bounce_type": "hard" if hard else "soft", "detail": item.get("reason")},
                    suppress_reason="hard_bounce" if hard else None,
                )
            if kind == "spamreport":
                return await record(
                    conn,
                    message,
                    "complained",
                    at,
                    key,
                    {"detail": "spam report"},
                    suppress_reason="complaint",
                )
            if kind in ("unsubscribe", "group_unsubscribe"):
                return await record(
                    conn,
                    message,
                    "unsubscribed",
                    at,
                    key,
                    {"method": "provider"},
                    suppress_reason="unsubscribed",
                )
            if kind == "open":
                return await record(conn, message, "opened", at, key, {"source": "sendgrid"})
            if kind == "click":
                return await record(
                    conn, message, "clicked", at, key, {"source": "sendgrid", "url": item.get("url")}
                )
        return False


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))
