"""Limits on what the platform accepts and stores, stated once.

Both APIs refuse input past these before anything is stored. Each limit
sits below a ceiling of something that reads the data later: PostgreSQL
text and jsonb cannot hold U+0000, no UTF-8 text can hold a lone surrogate,
orjson (every response) refuses integers beyond 64 bits and nesting past
254 levels, jsonb refuses very deep documents, PostgreSQL refuses UTC
offsets past ±15:59 and years past 294276. Data stored past one of them
could not be read back, so it never gets in.

Pure: pydantic and the standard library only (imported by both apps and by
workflow code).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator

# Levels of nesting inside a free-form JSON value (event properties and
# context, profile traits, template data): `{"a": {"b": 1}}` is 2 levels.
MAX_JSON_DEPTH = 32
# Levels of a whole management request body; segment definitions nest
# their conditions (8 condition levels are 16 JSON levels) inside the body.
MAX_BODY_DEPTH = 64
# orjson, which renders every response, refuses integers outside int64/uint64;
# the signed range is also what a PostgreSQL bigint holds.
JSON_INT_MIN = -(2**63)
JSON_INT_MAX = 2**63 - 1

# Request bodies of the management API (`/api/v1/...`) and of the tracking
# API's non-ingestion routes (provider webhooks can batch many events).
API_BODY_BYTES = 1024 * 1024
WEBHOOK_BODY_BYTES = 10 * 1024 * 1024

# Timestamps: the real time zones span -12:00..+14:00; anything further out
# is a broken client (PostgreSQL refuses offsets past ±15:59 outright).
MAX_UTC_OFFSET = timedelta(hours=14)
# An event timestamp further ahead of its receipt than this is a client
# clock that is wrong; the event is kept at its receipt time (Segment does
# the same), so `last_seen` and time windows stay truthful.
MAX_FUTURE_SKEW = timedelta(hours=24)


class Unstorable(ValueError):
    """A JSON value the platform cannot store or read back; `path` names
    where (keys and list indexes from the value's root)."""

    def __init__(self, path: list[Any], msg: str) -> None:
        super().__init__(msg)
        self.path = path
        self.msg = msg

    def where(self, root: str) -> str:
        """The dotted location under `root`, e.g. `body.traits.a.0`; a key
        that is itself the problem is shown escaped, so the error renders."""
        parts = (
            str(p).encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00") for p in self.path
        )
        return ".".join([root, *parts])


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored (NUL, lone surrogate), or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain lone surrogates (text must be valid Unicode)"
    return None


def check_json(value: Any, max_depth: int = MAX_JSON_DEPTH, *, check_text: bool = True) -> None:
    """Raise `Unstorable` if `value` (parsed JSON) nests deeper than
    `max_depth` levels, holds an integer beyond 64 bits or a non-finite
    number, or (with `check_text`) a string or key with NUL or a lone
    surrogate. One pass; containers are the only recursion."""
    try:
        _walk(value, max_depth, check_text)
    except RecursionError:  # only reachable with a huge max_depth
        raise Unstorable([], f"nested deeper than {max_depth} levels") from None
    except Unstorable as exc:
        if exc.msg is _TOO_DEEP:
            exc.msg = f"nested deeper than {max_depth} levels"
            exc.args = (exc.msg,)
        raise


_TOO_DEEP = "nested too deeply"


def _walk(value: Any, depth_left: int, check_text: bool) -> None:
    kind = type(value)
    if kind is dict:
        if depth_left <= 0:
            raise Unstorable([], _TOO_DEEP)
        for key, item in value.items():
            if check_text and type(key) is str:
                problem = text_problem(key)
                if problem is not None:
                    raise Unstorable([key], f"key {problem}")
            try:
                _walk(item, depth_left - 1, check_text)
            except Unstorable as exc:
                exc.path.insert(0, key)
                raise
    elif kind is list:
        if depth_left <= 0:
            raise Unstorable([], _TOO_DEEP)
        for n, item in enumerate(value):
            try:
                _walk(item, depth_left - 1, check_text)
            except Unstorable as exc:
                exc.path.insert(0, n)
                raise
    elif kind is str:
        if check_text:
            problem = text_problem(value)
            if problem is not None:
                raise Unstorable([], problem)
    elif kind is int:
        if not JSON_INT_MIN <= value <= JSON_INT_MAX:
            raise Unstorable([], f"integer out of range ({JSON_INT_MIN}..{JSON_INT_MAX})")
    elif kind is float and not math.isfinite(value):
        raise Unstorable([], "number out of range")


def check_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise `Unstorable` if `value` nests deeper than `max_depth` levels.
    Only containers are visited: the cheap check for input whose text and
    numbers the JSON parser already vetted (orjson refuses lone surrogates
    and non-finite numbers, and reads integers past 64 bits as floats)."""
    if not _fits(value, max_depth):
        raise Unstorable([], f"nested deeper than {max_depth} levels")


def _fits(value: Any, depth_left: int) -> bool:
    kind = type(value)
    if kind is dict:
        children: Any = value.values()
    elif kind is list:
        children = value
    else:
        return True
    if depth_left <= 0:
        return False
    for item in children:
        kind = type(item)
        if (kind is dict or kind is list) and not _fits(item, depth_left - 1):
            return False
    return True


def check_offset(value: datetime) -> datetime:
    """`value` in UTC (naive means UTC). ValueError when its UTC offset is
    past ±14:00 or it falls outside years 1..9999 once in UTC."""
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    if not offset:  # the common case ("Z"): nothing to check or convert
        return value
    if abs(offset) > MAX_UTC_OFFSET:
        raise ValueError("UTC offset must be within ±14:00")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date must fall within years 1..9999 in UTC") from None


# A timestamp field: in UTC, offsets past ±14:00 and instants outside years
# 1..9999 refused (422) before anything downstream sees them.
UtcDatetime = Annotated[datetime, AfterValidator(check_offset)]
