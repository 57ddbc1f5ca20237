"""Render templates with a sandboxed Jinja2 environment, within a budget.

Templates see `profile` (traits plus `email`, `id`, `external_id`),
`event` (the triggering event: `name` and its properties), `data` (values
given with the send) and `unsubscribe_url`. A variable that does not exist
renders as an empty string and is reported (by preview), so a typo or a
missing trait never crashes a send. The sandbox refuses attribute access
to Python internals, so a template cannot reach the server.

Every render has a budget: `RENDER_SECONDS` of time (checked in every
loop iteration, call, attribute and item access, and output chunk) and
`MAX_OUTPUT_CHARS` of output per part; `*`, `**` and `%` refuse results
over the cap before building them. `render_async` runs the render in a
small thread pool so the API's and worker's event loops never wait on
it. A render over budget raises `RenderBudgetExceeded`.

At save, `check_template` refuses what can never render: a template that
does not compile, names an attribute the sandbox forbids (`__class__`,
`_private`, `mro`…), or runs over the budget even with an empty context.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    SandboxedEnvironment,
)

from core.errors import ValidationFailed

RENDER_SECONDS = 2.0
"""Time budget of one render (all parts of a message)."""
MAX_OUTPUT_CHARS = 2_000_000
"""Most characters one rendered part (or one intermediate string) may hold;
mail clients clip far earlier (Gmail at ~100 KB)."""
MAX_EXPONENT = 1000
"""Largest exponent `**` accepts (a huge power takes seconds and memory)."""
_CHECK_EVERY = 512  # loop iterations between clock reads: a clock read costs more than an iteration

_UNSAFE_NAMES = (
    UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
    | {"mro"}
)
_LOOP_GUARD = "__mp_loop_guard"

_MISSING: ContextVar[list[str] | None] = ContextVar("missing_template_variables", default=None)


class RenderFailed(Exception):
    """A template could not be rendered (the message must not go out empty)."""


class RenderBudgetExceeded(RenderFailed):
    """A render ran over its time or output budget."""


@dataclass
class _Budget:
    deadline: float
    ticks: int = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % _CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderBudgetExceeded(f"template rendering took over {RENDER_SECONDS:g} s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_render_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _sized(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple) and len(value) > MAX_OUTPUT_CHARS:
        raise RenderBudgetExceeded(f"a template value grew over {MAX_OUTPUT_CHARS} characters")
    return value


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wraps every `{% for %}` iterable: each iteration counts against the budget."""
    for item in iterable:
        _tick()
        yield item


class _RecordingUndefined(ChainableUndefined):
    """Renders empty, chains through attributes, and records its name in
    the current render's list."""

    def __str__(self) -> str:
        if self._undefined_exception is SecurityError:
            # A forbidden attribute is an error, not a missing variable.
            self._fail_with_undefined_error()
        missing = _MISSING.get()
        if missing is not None and self._undefined_name is not None:
            name = str(self._undefined_name)
            if name not in missing:
                missing.append(name)
        return ""

    __html__ = __str__


class BudgetedEnvironment(SandboxedEnvironment):
    """The sandbox, plus budget checks on calls, attribute and item access,
    and on the operators that can build huge values from a short template."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals[_LOOP_GUARD] = _loop_guard

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        """`*` and `**` are checked before computing, `%` after."""
        _tick()
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                growing = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
                if growing and len(seq) * times > MAX_OUTPUT_CHARS:
                    raise RenderBudgetExceeded(
                        f"a template value would grow over {MAX_OUTPUT_CHARS} characters"
                    )
        if operator_ == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise RenderBudgetExceeded(f"exponent over {MAX_EXPONENT}")
        return _sized(super().call_binop(context, operator_, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """A sandboxed call, counted against the budget, with its result size checked."""
        _tick()
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access, counted against the budget."""
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Item access, counted against the budget."""
        _tick()
        return super().getitem(obj, argument)


@dataclass
class Rendered:
    """A rendered message body."""

    subject: str
    html: str
    text: str
    missing: list[str] = field(default_factory=list)


_ENVIRONMENTS = {
    escape: BudgetedEnvironment(undefined=_RecordingUndefined, autoescape=escape, keep_trailing_newline=True)
    for escape in (False, True)
}


def _cap_width(env: BudgetedEnvironment) -> None:
    """Filters that pad to a caller-given width build their result in one
    step: refuse a width over the cap before building it."""
    for name in ("center", "indent", "wordwrap"):
        original = env.filters[name]

        def capped(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if any(isinstance(a, int) and a > MAX_OUTPUT_CHARS for a in (*args, *kwargs.values())):
                raise RenderBudgetExceeded(f"a filter width over {MAX_OUTPUT_CHARS}")
            _tick()
            return _original(*args, **kwargs)

        if hasattr(original, "jinja_pass_arg"):
            capped.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
        env.filters[name] = capped
    original_format = env.filters["format"]

    def sized_format(*args: Any, **kwargs: Any) -> Any:
        return _sized(original_format(*args, **kwargs))

    env.filters["format"] = sized_format


for _env in _ENVIRONMENTS.values():
    _cap_width(_env)

# A few renders at a time; a render that ignores its deadline cannot take
# the event loop's default executor with it.
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="template-render")


def _guard_loops(tree: nodes.Template) -> nodes.Template:
    for loop in tree.find_all(nodes.For):
        guarded = nodes.Call(nodes.Name(_LOOP_GUARD, "load"), [loop.iter], [], None, None)
        loop.iter = guarded.set_lineno(loop.lineno)
    return tree


@lru_cache(maxsize=2048)
def _compiled(source: str, autoescape: bool) -> Template:
    # Compiling costs far more than rendering; templates change rarely.
    env = _ENVIRONMENTS[autoescape]
    tree = _guard_loops(env.parse(source))
    tree.set_environment(env)
    return env.from_string(tree)


def _unsafe_names(tree: nodes.Template) -> list[str]:
    """Attribute names the sandbox would refuse, found without running the template."""
    names: list[str] = [n.attr for n in tree.find_all(nodes.Getattr)]
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            names.append(item.arg.value)
    for flt in tree.find_all(nodes.Filter):
        if flt.name == "attr" and flt.args and isinstance(flt.args[0], nodes.Const):
            names.append(str(flt.args[0].value))
    return sorted({n for n in names if n.startswith("_") or n in _UNSAFE_NAMES})


def _check_sources(sources: dict[str, str | None]) -> None:
    errors = []
    for name, source in sources.items():
        if source is None:
            continue
        try:
            tree = _ENVIRONMENTS[False].parse(source)
            _compiled(source, name == "html")
        except TemplateError as exc:
            errors.append({"loc": f"body.{name}", "msg": f"template error: {exc}"})
            continue
        unsafe = _unsafe_names(tree)
        if unsafe:
            errors.append(
                {"loc": f"body.{name}", "msg": f"template uses attributes the sandbox forbids: {unsafe}"}
            )
    if errors:
        raise ValidationFailed(errors)


def check_syntax(**sources: str | None) -> None:
    """ValidationFailed naming the field when a template does not compile
    or names a forbidden attribute."""
    _check_sources(sources)


async def check_template(**sources: str | None) -> None:
    """`check_syntax`, then a trial render with an empty context: a template
    over the budget even then is refused now rather than at send time."""
    _check_sources(sources)
    context = {"profile": {}, "event": {}, "data": {}, "unsubscribe_url": "https://example.invalid/u"}
    for name, source in sources.items():
        if not source:
            continue
        try:
            await render_async(source, "", None, context, strict=False)
        except RenderBudgetExceeded as exc:
            raise ValidationFailed([{"loc": f"body.{name}", "msg": str(exc)}]) from None


def _render_part(source: str, autoescape: bool, context: dict[str, Any], budget: _Budget) -> str:
    size = 0
    chunks: list[str] = []
    for chunk in _compiled(source, autoescape).generate(context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise RenderBudgetExceeded(f"rendered output is over {MAX_OUTPUT_CHARS} characters")
        budget.check()
        chunks.append(chunk)
    return "".join(chunks)


def render(
    subject: str, html: str, text: str | None, context: dict[str, Any], *, strict: bool = False
) -> Rendered:
    """Render all parts within the budget. Over budget: RenderBudgetExceeded.
    Another error in a part: with `strict` (sending) RenderFailed; without
    (preview) the part renders empty and the error is reported."""
    missing: list[str] = []
    problems: list[str] = []
    budget = _Budget(time.monotonic() + RENDER_SECONDS)
    missing_token = _MISSING.set(missing)
    budget_token = _BUDGET.set(budget)

    def one(source: str, autoescape: bool) -> str:
        try:
            return _render_part(source, autoescape, context, budget)
        except RenderBudgetExceeded:
            raise
        except RecursionError:
            raise RenderFailed("template recursion is too deep") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            if strict:
                raise RenderFailed(f"template error: {exc}") from None
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
        _BUDGET.reset(budget_token)
        _MISSING.reset(missing_token)
    rendered.missing += [f"error: {p}" for p in problems]
    return rendered


async def render_async(
    subject: str, html: str, text: str | None, context: dict[str, Any], *, strict: bool = False
) -> Rendered:
    """`render` in the render pool, never blocking the event loop; a render
    that does not finish within its budget (plus a second of grace) raises
    RenderBudgetExceeded even if its thread is still running."""
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(_EXECUTOR, lambda: render(subject, html, text, context, strict=strict))
    try:
        return await asyncio.wait_for(job, RENDER_SECONDS + 1.0)
    except TimeoutError:
        raise RenderBudgetExceeded(f"template rendering took over {RENDER_SECONDS:g} s") from None


async def render_many_async(
    subject: str, html: str, text: str | None, contexts: list[dict[str, Any]]
) -> list[Rendered | RenderFailed]:
    """`render` (strict) of one template for many contexts in one job of the
    render pool (a batch send: one thread hop per chunk, not per message).
    Each render keeps its own budget; each item is its result or the
    RenderFailed it raised."""

    def job() -> list[Rendered | RenderFailed]:
        out: list[Rendered | RenderFailed] = []
        for context in contexts:
            try:
                out.append(render(subject, html, text, context, strict=True))
            except RenderFailed as exc:
                out.append(exc)
        return out

    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(_EXECUTOR, job), RENDER_SECONDS * max(1, len(contexts)) + 1.0
        )
    except TimeoutError:
        raise RenderBudgetExceeded(f"template rendering took over {RENDER_SECONDS:g} s") from None


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
