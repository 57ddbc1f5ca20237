"""SMTP with aiosmtplib.

No lookup (ProviderLookup): SMTP cannot be asked what a server accepted,
so a send interrupted mid-call with SMTP enabled ends `unknown`
(delivery/reconcile.py)."""

from __future__ import annotations

from typing import Any

import aiosmtplib

from delivery.adapters.base import OutgoingEmail, ProviderError
from delivery.destinations import PrivateDestination, check_host


class SMTPAdapter:
    """Settings: `host`, `port`, `username`, `use_tls` (implicit TLS),
    `start_tls`, `timeout`. Secrets: `password`."""

    kind = "smtp"

    def __init__(
        self, settings: dict[str, Any], secrets: dict[str, Any], *, allow_private_hosts: bool = False
    ) -> None:
        self._settings = settings
        self._password = secrets.get("password")
        self._allow_private_hosts = allow_private_hosts

    async def send(self, email: OutgoingEmail) -> str:
        s = self._settings
        message = email.mime()
        host = s.get("host", "localhost")
        if not self._allow_private_hosts:
            try:
                await check_host(host)
            except (PrivateDestination, OSError, TimeoutError) as exc:
                raise ProviderError(f"smtp host refused: {exc}", retryable=True) from None
        try:
            await aiosmtplib.send(
                message,
                hostname=host,
                port=int(s.get("port", 25)),
                username=s.get("username") or None,
                password=self._password or None,
                use_tls=bool(s.get("use_tls", False)),
                start_tls=s.get("start_tls"),
                timeout=float(s.get("timeout", 15)),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            permanent = bool(codes) and all(500 <= c < 600 for c in codes)
            raise ProviderError(f"smtp refused the recipient: {exc}", retryable=not permanent) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise ProviderError(
                f"smtp {exc.code}: {exc.message}", retryable=not 500 <= exc.code < 600
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ProviderError(f"smtp unreachable: {exc!r}", retryable=True) from None
        return message["Message-ID"]

    async def close(self) -> None:
        return None
