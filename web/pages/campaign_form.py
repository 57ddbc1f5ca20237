"""The campaign forms' fields turned into the API's request models, with
each problem attached to the form field that caused it."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from campaigns.schemas import CampaignCreate, ScheduleRequest
from core.errors import AppError
from web.deps import Form
from web.forms import FieldErrors

FIELDS = (
    "name",
    "topic",
    "source",
    "template_id",
    "subject",
    "html",
    "text",
    "from_email",
    "from_name",
    "reply_to",
    "data",
    "when",
    "scheduled_at",
    "throttle_per_hour",
)
WHEN = ("draft", "now", "at", "local")
CONTENT_FIELDS = ("from_email", "reply_to", "subject", "html", "text")
STARTER_HTML = (
    "<h1>Hi {{ profile.first_name | default('there') }}</h1>\n"
    "<p>Our spring sale starts today: {{ data.offer | default('20% off everything') }}.</p>\n"
    '<p><a href="https://example.com/sale">Shop the sale</a></p>\n'
    '<p style="font-size:12px"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)


def pydantic_field(loc: list[str]) -> tuple[str, str]:
    """(form field, rest of the location) of a CampaignCreate error location."""
    if loc and loc[0] in ("content", "audience") and len(loc) > 1:
        return loc[1], ".".join(loc[2:])
    if loc and loc[0] == "content":
        return "content", ""
    if loc and loc[0] == "audience":
        return "segment_ids", ""
    return (loc[0] if loc else "form"), ".".join(loc[1:])


def message(msg: str) -> str:
    """A pydantic message without its "Value error, " prefix."""
    return msg.removeprefix("Value error, ")


def field_errors(items: list[dict]) -> dict[str, str]:
    """Form field → message of pydantic errors or a ValidationFailed detail
    (`body.content.subject` → `subject`, `body.audience.segment_ids.0` → `segment_ids`)."""
    out: dict[str, str] = {}
    for item in items:
        raw = item.get("loc", "")
        loc = [str(p) for p in raw] if isinstance(raw, list | tuple) else str(raw).split(".")
        if loc and loc[0] == "body":
            loc = loc[1:]
        field, rest = pydantic_field(loc)
        if rest.isdigit():  # segment_ids.0: the list itself
            rest = ""
        msg = message(str(item.get("msg", "")))
        if field == "content":  # the content's own checks name the field first
            field = next((f for f in CONTENT_FIELDS if msg.startswith(f + " ")), field)
        out.setdefault(field, f"{rest}: {msg}" if rest else msg)
    return out


def create_body(values: dict[str, Any]) -> CampaignCreate:
    """The API's CampaignCreate; FieldErrors naming the form fields."""
    try:
        return CampaignCreate.model_validate(values)
    except ValidationError as exc:
        raise FieldErrors(field_errors(exc.errors(include_url=False, include_input=False))) from None


def content(values: dict[str, Any]) -> dict[str, Any]:
    """The content fields of the chosen source (template or inline), empty ones left out."""
    keys = (
        ("template_id", "subject", "from_email", "from_name", "reply_to")
        if values["source"] == "template"
        else ("subject", "html", "text", "from_email", "from_name", "reply_to")
    )
    if values["source"] == "template" and not values.get("template_id"):
        raise FieldErrors({"template_id": "choose a template, or write the email inline"})
    return {k: values[k] for k in keys if values.get(k)}


def schedule(values: dict[str, Any]) -> ScheduleRequest | None:
    """The schedule the form asks for (None: save as a draft or send now)."""
    if values["when"] not in WHEN:
        raise FieldErrors({"when": "choose when to send"})
    if values["when"] in ("draft", "now"):
        return None
    if not values.get("scheduled_at"):
        raise FieldErrors({"scheduled_at": "pick a date and time"})
    try:
        return ScheduleRequest.model_validate(
            {"scheduled_at": values["scheduled_at"], "local_time": values["when"] == "local"}
        )
    except ValueError:
        raise FieldErrors({"scheduled_at": "not a date and time (YYYY-MM-DDTHH:MM)"}) from None


async def form_values(request: Request, form: Form) -> dict[str, Any]:
    """The create form's fields, trimmed, with the ticked segments (multi-valued)."""
    values: dict[str, Any] = {k: form.get(k, "") for k in FIELDS}
    for key in FIELDS:
        if key not in ("html", "text", "data"):
            values[key] = values[key].strip()
    data = await request.form()  # cached by Starlette: the multi-valued fields
    for key in ("segment_ids", "exclude_segment_ids"):
        values[key] = [v for v in data.getlist(key) if isinstance(v, str) and v][:50]
    values["source"] = values["source"] if values["source"] in ("template", "inline") else "inline"
    values["when"] = values["when"] or "draft"
    return values


def addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons or white space."""
    return [a for a in re.split(r"[\s,;]+", text) if a]


def detail(exc: AppError) -> str:
    """A service refusal as one line of text."""
    if isinstance(exc.detail, list):
        return "; ".join(message(str(d.get("msg", d))) if isinstance(d, dict) else str(d) for d in exc.detail)
    return str(exc.detail)
