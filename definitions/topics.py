"""Subscription topics as the definitions see them: the shape of a topic
key, shared by the topics API, the segment language and the flow graph.

A key is a slug (`newsletter`, `product-updates`): lower-case ASCII
letters, digits, `-` and `_`, starting with a letter or digit, at most 64
characters. It is what messages, opt-outs and segment conditions refer to,
so it never changes once the topic exists (its name and description may).

Pure: pydantic and the standard library only.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

TOPIC_KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TOPIC_KEY = re.compile(TOPIC_KEY_PATTERN, re.ASCII)

TopicKey = Annotated[
    str, Field(pattern=TOPIC_KEY_PATTERN, max_length=64, examples=["newsletter", "product-updates"])
]


def is_topic_key(value: str) -> bool:
    """Whether `value` is a well-formed topic key."""
    return TOPIC_KEY.fullmatch(value) is not None
