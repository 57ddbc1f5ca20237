"""HTML of the preference page (`/u/{token}`): plain forms that work
without JavaScript; every value shown is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from delivery.preferences import UNSUBSCRIBED, PreferenceView, Unsubscribed

_STYLE = (
    "<style>fieldset{border:1px solid #ccc;padding:1em;margin:1em 0}"
    "label{display:block;margin:.4em 0}small{color:#555;display:block;margin-left:1.6em}"
    "button{padding:.4em 1em;margin:.3em 0}.note{background:#f4f4f4;padding:.6em}</style>"
)


def _topic_name(topics: list[Any], key: str) -> str:
    return next((t["name"] for t in topics if t["key"] == key), key)


def preferences_body(view: PreferenceView, notice: str | None = None) -> str:
    """The page: the workspace's topics with the person's choice,
    "unsubscribe from all", and "resubscribe to all" once they left
    something they can come back to."""
    address = escape(view.message["email"])
    parts = [_STYLE, "<h1>Email preferences</h1>", f"<p>For <b>{address}</b></p>"]
    if notice:
        parts.append(f"<p class='note' role='status'>{escape(notice)}</p>")
    if view.suppressed == UNSUBSCRIBED:
        parts.append(
            "<p class='note'>This address is unsubscribed from all emails; "
            "choices below apply if it is ever subscribed again.</p>"
        )
    elif view.suppressed is not None:
        parts.append(
            "<p class='note'>This address gets no emails: messages to it bounced or were reported "
            "as spam. Contact the sender to receive emails again.</p>"
        )
    own = view.message["topic"]
    if view.topics and view.can_choose:
        boxes = []
        for topic in view.topics:
            key = escape(topic["key"], quote=True)
            checked = "" if topic["key"] in view.opted_out else " checked"
            mark = " <em>(this email)</em>" if topic["key"] == own else ""
            description = f"<small>{escape(topic['description'])}</small>" if topic["description"] else ""
            boxes.append(
                f"<label><input type='checkbox' name='topic' value='{key}'{checked}> "
                f"{escape(topic['name'])}{mark}</label>{description}"
            )
        parts.append(
            "<form method='post'><input type='hidden' name='action' value='save'>"
            f"<fieldset><legend>Emails you get</legend>{''.join(boxes)}</fieldset>"
            "<button type='submit'>Save preferences</button></form>"
        )
    if view.suppressed is None:
        parts.append(
            "<form method='post'><input type='hidden' name='action' value='unsubscribe_all'>"
            "<button type='submit'>Unsubscribe from all emails</button></form>"
        )
    if view.suppressed == UNSUBSCRIBED or (view.can_choose and view.opted_out):
        parts.append(
            "<form method='post'><input type='hidden' name='action' value='resubscribe_all'>"
            "<button type='submit'>Resubscribe to all emails</button></form>"
        )
    return "".join(parts)


def unsubscribed_body(outcome: Unsubscribed, topics: list[Any]) -> str:
    """The answer to a one-click or "unsubscribe from all"."""
    address = escape(outcome.message["email"])
    if outcome.topic is None:
        return f"<h1>Unsubscribed</h1><p>{address} will get no more emails.</p>"
    name = escape(_topic_name(topics, outcome.topic))
    return (
        f"<h1>Unsubscribed</h1><p>{address} will get no more <b>{name}</b> emails.</p>"
        "<p><a href=''>Choose which emails you get</a></p>"
    )
