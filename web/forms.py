"""Turning submitted form fields into the API's request models, with each
problem attached to the field that caused it (shown next to it)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from core.errors import AppError, ValidationFailed
from definitions.limits import MAX_JSON_DEPTH, Unstorable, check_json


class FieldErrors(Exception):
    """Field name → message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def parse_json_field(name: str, text: str, *, required: bool = True) -> Any:
    """A JSON field's value; FieldErrors with the line and column of a syntax error."""
    if not text.strip():
        if required:
            raise FieldErrors({name: "required"})
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FieldErrors(
            {name: f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"}
        ) from None
    except RecursionError:
        raise FieldErrors({name: f"nested deeper than {MAX_JSON_DEPTH} levels"}) from None
    try:
        check_json(value)
    except Unstorable as exc:
        raise FieldErrors(
            {name: exc.where(name)[len(name) + 1 :] + (": " if exc.path else "") + exc.msg}
        ) from None
    return value


def build(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """`model` from the values; FieldErrors naming each bad field (the
    first part of pydantic's location; the rest of it in the message)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FieldErrors(_by_field(exc.errors(include_url=False, include_input=False))) from None


def _by_field(errors: list[dict]) -> dict[str, str]:
    out: dict[str, str] = {}
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else "form"
        where = ".".join(loc[1:])
        message = f"{where}: {err['msg']}" if where else err["msg"]
        out.setdefault(field, message)
    return out


def from_app_error(exc: AppError, default_field: str) -> dict[str, str]:
    """A service's refusal as field errors: ValidationFailed locations
    (`body.definition.conditions.0`) map to their field; anything else to
    `default_field`."""
    if isinstance(exc, ValidationFailed) and isinstance(exc.detail, list):
        out: dict[str, str] = {}
        for item in exc.detail:
            loc = str(item.get("loc", "")).removeprefix("body.").split(".")
            field = loc[0] if loc and loc[0] else default_field
            rest = ".".join(loc[1:])
            out.setdefault(field, f"{rest}: {item.get('msg')}" if rest else str(item.get("msg")))
        return out
    return {default_field: str(exc.detail)}
