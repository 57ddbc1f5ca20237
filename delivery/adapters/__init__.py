"""Provider adapters: one class per provider kind, all with `send()`."""

from __future__ import annotations

from typing import Any

from delivery.adapters.base import Adapter, OutgoingEmail, ProviderError
from delivery.adapters.mixmax import MixmaxAdapter
from delivery.adapters.sendgrid import SendGridAdapter
from delivery.adapters.ses import SESAdapter
from delivery.adapters.smtp import SMTPAdapter

ADAPTERS: dict[str, type] = {
    "ses": SESAdapter,
    "sendgrid": SendGridAdapter,
    "mixmax": MixmaxAdapter,
    "smtp": SMTPAdapter,
}


def build_adapter(
    kind: str, settings: dict[str, Any], secrets: dict[str, Any], *, allow_private_hosts: bool = False
) -> Adapter:
    """An adapter for a provider row's kind, settings and secrets; it only
    connects to public addresses unless `allow_private_hosts`."""
    return ADAPTERS[kind](settings, secrets, allow_private_hosts=allow_private_hosts)


__all__ = ["ADAPTERS", "Adapter", "OutgoingEmail", "ProviderError", "build_adapter"]
