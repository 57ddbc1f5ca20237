"""The campaign forms' fields turned into the API's request models (a new
campaign, a draft's changes, an A/B test of subject lines), with each
problem attached to the form field that caused it, and a campaign turned
back into the form's fields."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import ValidationError

from campaigns.schemas import CampaignCreate, CampaignOut, CampaignUpdate, ScheduleRequest
from core.errors import AppError
from definitions.campaigns import MAX_AB_WAIT_SECONDS, MAX_VARIANTS, VARIANT_NAMES
from web.deps import Form
from web.forms import FieldErrors, parse_json_field

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
    "ab",
    "ab_test_percent",
    "ab_wait_minutes",
    "ab_metric",
    *(f"ab_subject_{i}" for i in range(MAX_VARIANTS)),
)
Body = TypeVar("Body", CampaignCreate, CampaignUpdate)
# The A/B test's form fields by the test's own field names.
AB_FIELDS = {"test_percent": "ab_test_percent", "wait_seconds": "ab_wait_minutes", "metric": "ab_metric"}
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
    if loc and loc[0] == "ab_test":
        return _ab_field(loc[1:])
    if loc and loc[0] == "local_time":  # the schedule's: the form's "when"
        return "when", ""
    if loc and loc[0] in ("content", "audience") and len(loc) > 1:
        return loc[1], ".".join(loc[2:])
    if loc and loc[0] == "content":
        return "content", ""
    if loc and loc[0] == "audience":
        return "segment_ids", ""
    return (loc[0] if loc else "form"), ".".join(loc[1:])


def _ab_field(loc: list[str]) -> tuple[str, str]:
    """(form field, rest) of a location under `ab_test` (a variant's
    subject is its own field; anything else about variants the test's)."""
    if len(loc) >= 3 and loc[0] == "variants" and loc[1].isdigit() and loc[2] == "subject":
        return f"ab_subject_{loc[1]}", ""
    if loc and loc[0] in AB_FIELDS:
        return AB_FIELDS[loc[0]], ""
    return "ab", ".".join(loc)


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


def request_body(model: type[Body], values: dict[str, Any]) -> Body:
    """The API's CampaignCreate (a new campaign) or CampaignUpdate (a
    draft's every field); FieldErrors naming the form fields."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FieldErrors(field_errors(exc.errors(include_url=False, include_input=False))) from None


def body_values(values: dict[str, Any]) -> dict[str, Any]:
    """The request body's fields of the form (create and edit), the A/B
    test left out when the form cannot show it (`ab_locked`)."""
    body = {
        "name": values["name"],
        "content": content(values),
        "audience": {
            "segment_ids": values["segment_ids"],
            "exclude_segment_ids": values["exclude_segment_ids"],
        },
        "data": parse_json_field("data", values["data"], required=False) or {},
        "topic": values["topic"] or None,
        "throttle_per_hour": values["throttle_per_hour"] or None,
    }
    if not values.get("ab_locked"):
        body["ab_test"] = ab_test(values)
    return body


def _whole(values: dict[str, Any], field: str, low: int, high: int, what: str) -> int:
    """A whole number field within [low, high]; FieldErrors otherwise."""
    text = values.get(field) or ""
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not low <= int(text) <= high:
        raise FieldErrors({field: f"a whole number from {low:,} to {high:,} {what}"})
    return int(text)


def ab_test(values: dict[str, Any]) -> dict[str, Any] | None:
    """The A/B test of subject lines the form asks for (None: no test).
    Variant A with no subject of its own is the control; B needs one; C
    and D are optional, in order."""
    if values.get("ab") != "on":
        return None
    subjects = [values.get(f"ab_subject_{i}") or "" for i in range(MAX_VARIANTS)]
    if not subjects[1]:
        raise FieldErrors({"ab_subject_1": "write the subject variant B tries"})
    used = next((i for i in range(2, MAX_VARIANTS) if not subjects[i]), MAX_VARIANTS)  # variants in use
    for i in range(used + 1, MAX_VARIANTS):
        if subjects[i]:
            raise FieldErrors({f"ab_subject_{i}": f"fill variant {VARIANT_NAMES[used]} first"})
    variants = [
        {"name": VARIANT_NAMES[i]} | ({"subject": subjects[i]} if subjects[i] else {}) for i in range(used)
    ]
    return {
        "variants": variants,
        "test_percent": _whole(values, "ab_test_percent", 1, 100, "percent"),
        "wait_seconds": 60 * _whole(values, "ab_wait_minutes", 1, MAX_AB_WAIT_SECONDS // 60, "minutes"),
        "metric": values.get("ab_metric") or "open_rate",
    }


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


def values_of(campaign: CampaignOut) -> dict[str, Any]:
    """The form's fields of a campaign (the edit form); `ab_locked` when
    its A/B test changes more than subject lines (the API's to edit)."""
    content = campaign.content
    values: dict[str, Any] = {
        k: str(content.get(k) or "") for k in ("template_id", *CONTENT_FIELDS, "from_name")
    }
    values |= {
        "name": campaign.name,
        "topic": campaign.topic or "",
        "source": "template" if content.get("template_id") else "inline",
        "data": json.dumps(campaign.data, indent=2) if campaign.data else "",
        "throttle_per_hour": str(campaign.throttle_per_hour or ""),
        "segment_ids": [str(s) for s in campaign.audience.get("segment_ids", [])],
        "exclude_segment_ids": [str(s) for s in campaign.audience.get("exclude_segment_ids", [])],
        "when": "draft",
        "ab_test_percent": "20",
        "ab_wait_minutes": "240",
        "ab_metric": "open_rate",
    }
    test = campaign.ab_test
    if test:
        variants = test["variants"]
        values |= {
            "ab": "on",
            "ab_locked": any(set(v) - {"name", "subject"} for v in variants)
            or test["wait_seconds"] % 60 != 0,
            "ab_test_percent": str(test["test_percent"]),
            "ab_wait_minutes": str(test["wait_seconds"] // 60),
            "ab_metric": test["metric"],
        }
        values |= {f"ab_subject_{i}": v.get("subject") or "" for i, v in enumerate(variants)}
    return values


def addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons or white space."""
    return [a for a in re.split(r"[\s,;]+", text) if a]


def detail(exc: AppError) -> str:
    """A service refusal as one line of text."""
    if isinstance(exc.detail, list):
        return "; ".join(message(str(d.get("msg", d))) if isinstance(d, dict) else str(d) for d in exc.detail)
    return str(exc.detail)
