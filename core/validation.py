"""Field checks shared by every API model."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def check_email(value: str | None) -> str | None:
    """A plausible address, stripped (full validation is the provider's job)."""
    if value is None:
        return None
    value = value.strip()
    local, sep, domain = value.rpartition("@")
    if not sep or not local or "." not in domain or " " in value or len(value) > 254:
        raise ValueError("not an email address")
    return value


Email = Annotated[str, AfterValidator(check_email)]
