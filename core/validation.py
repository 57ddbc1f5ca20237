"""Field checks shared by every API model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from definitions.limits import MAX_JSON_DEPTH, Unstorable, check_json


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


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    try:
        check_json(value, MAX_JSON_DEPTH)
    except Unstorable as exc:
        inner = ".".join(str(p) for p in exc.path)
        raise ValueError(f"{exc.msg} (at {inner})" if inner else exc.msg) from None
    return value


# A free-form JSON object the platform stores (traits, template data, provider
# settings): at most MAX_JSON_DEPTH levels, nothing a reader could not render.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null; leave the field out to keep its value")
    return value


# For PATCH models: a field that may be left out but never set to null
# (its column is NOT NULL). `NotNull` runs before the type's own checks.
NotNull = BeforeValidator(_not_null)
