"""What a campaign's page shows beside its stats: the hourly series as
chart lines, the funnel, and the email rendered for one of its readers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from campaigns.schemas import CampaignOut, CampaignStats
from core.errors import AppError, NotFound
from delivery import service as delivery
from delivery.schemas import PreviewRequest
from segments import service as segments
from web.charts import Line
from web.pages.campaign_form import detail

# Longest stretch the hourly chart draws hour by hour; longer ones by day.
MAX_HOURLY_BUCKETS = 24 * 14
MIN_HOURLY_BUCKETS = 12


def hourly_lines(stats: CampaignStats, now: datetime) -> tuple[list[datetime], list[Line], list[int], str]:
    """(buckets, lines, totals, interval) of the campaign's hourly series
    up to now, zeros filled in, at least the last 12 hours (so a send of the
    last hour is a point on a line, not a lone dot); by day when it spans
    more than two weeks."""
    kinds = ("sent", "delivered", "opened", "clicked", "bounced")
    if not stats.hourly:
        return [], [], [], "hour"
    hours = [h.hour.astimezone(UTC) for h in stats.hourly]
    last = max(hours[-1], now.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
    first = min(hours[0], last - timedelta(hours=MIN_HOURLY_BUCKETS - 1))
    interval, step = "hour", timedelta(hours=1)
    if (last - first) / step >= MAX_HOURLY_BUCKETS:
        interval, step = "day", timedelta(days=1)
        first, last = first.replace(hour=0), last.replace(hour=0)
    buckets: list[datetime] = []
    at = first
    while at <= last:
        buckets.append(at)
        at += step
    index = {b: i for i, b in enumerate(buckets)}
    values = {k: [0] * len(buckets) for k in kinds}
    for h, at in zip(stats.hourly, hours, strict=True):
        slot = index.get(at.replace(hour=0) if interval == "day" else at)
        if slot is not None:
            for k in kinds:
                values[k][slot] += getattr(h, k)
    lines = [Line(k.capitalize(), values[k]) for k in kinds]
    return buckets, lines, [sum(values[k]) for k in kinds], interval


def funnel(stats: CampaignStats) -> list[dict[str, Any]]:
    """Sent → delivered → opened → clicked, with the share of sent and of the step before."""
    steps = [
        ("Sent", stats.sent, "emails accepted by a provider"),
        ("Delivered", stats.delivered, "reported delivered by the provider"),
        ("Opened", stats.unique_opens, "people who opened (unique)"),
        ("Clicked", stats.unique_clicks, "people who clicked a link (unique)"),
    ]
    out = []
    for i, (label, count, hint) in enumerate(steps):
        previous = steps[i - 1][1] if i else count
        out.append(
            {
                "label": label,
                "count": count,
                "hint": hint,
                "of_sent": count / stats.sent if stats.sent else 0.0,
                "of_previous": count / previous if previous else 0.0,
            }
        )
    return out


async def preview(session, ws: uuid.UUID, campaign: CampaignOut, template, recipients: list) -> tuple:
    """(rendered email, error, for whom): for the first recipient, else the
    first member of the first segment, else a sample address."""
    content = campaign.content
    subject = content.get("subject") or (template.subject if template else None)
    html = content.get("html") or (template.html if template else None)
    text = content.get("text") or (template.text if template and not content.get("html") else None)
    if not subject or not html:
        return None, "The template of this campaign was deleted; the campaign cannot be sent.", ""
    profile_id, who = None, "preview@example.com (a sample address)"
    if recipients:
        profile_id, who = recipients[0].profile_id, recipients[0].email
    elif campaign.audience.get("segment_ids"):
        try:
            members = await segments.members(
                session, ws, uuid.UUID(campaign.audience["segment_ids"][0]), None, 1
            )
        except NotFound:
            members = None
        if members and members.data:
            profile_id, who = (
                members.data[0].profile_id,
                members.data[0].email or str(members.data[0].profile_id),
            )
    request = (
        PreviewRequest(profile_id=profile_id, data=campaign.data)
        if profile_id
        else PreviewRequest(email="preview@example.com", data=campaign.data)
    )
    try:
        return await delivery.preview_draft(session, ws, subject, html, text, request), None, who
    except AppError as exc:
        return None, detail(exc), who
