"""Render templates with a sandboxed Jinja2 environment.

Templates see `profile` (traits plus `email`, `id`, `external_id`),
`event` (the triggering event: `name` and its properties), `data` (values
given with the send) and `unsubscribe_url`. A variable that does not exist
renders as an empty string and is reported (by preview), so a typo or a
missing trait never crashes a send. The sandbox refuses attribute access
to Python internals, so a template cannot reach the server.
"""

from __future__ import annotations

import html as html_lib
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from core.errors import ValidationFailed

_MISSING: ContextVar[list[str] | None] = ContextVar("missing_template_variables", default=None)


class _RecordingUndefined(ChainableUndefined):
    """Renders empty, chains through attributes, and records its name in
    the current render's list."""

    def __str__(self) -> str:
        missing = _MISSING.get()
        if missing is not None and self._undefined_name is not None:
            name = str(self._undefined_name)
            if name not in missing:
                missing.append(name)
        return ""

    __html__ = __str__


@dataclass
class Rendered:
    """A rendered message body."""

    subject: str
    html: str
    text: str
    missing: list[str] = field(default_factory=list)


_ENVIRONMENTS = {
    escape: SandboxedEnvironment(undefined=_RecordingUndefined, autoescape=escape, keep_trailing_newline=True)
    for escape in (False, True)
}


@lru_cache(maxsize=2048)
def _compiled(source: str, autoescape: bool) -> Template:
    # Compiling costs far more than rendering; templates change rarely.
    return _ENVIRONMENTS[autoescape].from_string(source)


def check_syntax(**sources: str | None) -> None:
    """ValidationFailed naming the field when a template does not parse."""
    errors = []
    for name, source in sources.items():
        if source is None:
            continue
        try:
            _ENVIRONMENTS[False].parse(source)
        except TemplateError as exc:
            errors.append({"loc": f"body.{name}", "msg": f"template error: {exc}"})
    if errors:
        raise ValidationFailed(errors)


def render(subject: str, html: str, text: str | None, context: dict[str, Any]) -> Rendered:
    """Render all parts; a part that fails at render time renders empty
    (and is reported) rather than failing the send."""
    missing: list[str] = []
    problems: list[str] = []
    token = _MISSING.set(missing)

    def one(source: str, autoescape: bool) -> str:
        try:
            return _compiled(source, autoescape).render(context)
        except TemplateError as exc:
            problems.append(str(exc))
            return ""

    try:
        rendered_html = one(html, autoescape=True)
        rendered = Rendered(
            subject=one(subject, autoescape=False).strip().replace("\n", " "),
            html=rendered_html,
            text=one(text, autoescape=False) if text else html_to_text(rendered_html),
            missing=missing,
        )
    finally:
        _MISSING.reset(token)
    rendered.missing += [f"error: {p}" for p in problems]
    return rendered


class _TextExtractor(HTMLParser):
    _BLOCK = frozenset(
        {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in ("p", "div", "h1", "h2", "h3", "tr", "table"):
            self.parts.append("\n")
        elif tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(document: str) -> str:
    """A readable plain-text part from HTML: blocks become lines, links
    keep their address."""
    parser = _TextExtractor()
    parser.feed(document)
    text = html_lib.unescape("".join(parser.parts))
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def profile_context(profile: dict[str, Any] | None, email: str) -> dict[str, Any]:
    """The `profile` variable: traits, then identity fields on top."""
    if profile is None:
        return {"email": email}
    return {
        **(profile.get("traits") or {}),
        "email": profile.get("email") or email,
        "id": str(profile["id"]),
        "external_id": profile.get("external_id"),
    }
