"""A workspace with campaigns for the browser tests and their screenshots,
put in through the real APIs: people (tracking), the fake SendGrid with a
signed Event Webhook, segments, a template, a finished campaign whose
messages were delivered, opened and clicked through the tracking
endpoints, a draft and a campaign scheduled for next week."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.campaigns.support import finished
from tests.delivery.conftest import SENDER, add_sendgrid, make_template
from tests.web.demo import COUNTRIES, FIRST, PLANS

NEWSLETTER_HTML = (
    "<html><body><h2>Hi {{ profile.first_name }}!</h2><p>Here is what is new this month.</p>"
    "<p><a href='https://shop.example.com/new'>See what's new</a></p>"
    "<p style='font-size:12px'><a href='{{ unsubscribe_url }}'>Unsubscribe</a></p></body></html>"
)


@dataclass
class CampaignDemo:
    """What the seed made, and how to play the provider's and readers' part."""

    provider_id: str
    key: ec.EllipticCurvePrivateKey
    segments: dict[str, str]
    sent_campaign_id: str


async def seed_campaigns(api: httpx.AsyncClient, tracking: httpx.AsyncClient, sendgrid, people: int = 24):
    """People, segments, a provider and three campaigns (sent, draft, scheduled)."""
    calls = [
        {
            "type": "identify",
            "userId": f"user_{n + 1:03d}",
            "traits": {
                "email": f"{FIRST[n % len(FIRST)].lower()}.{n + 1}@example.com",
                "first_name": FIRST[n % len(FIRST)],
                "plan": PLANS[n % len(PLANS)],
                "country": COUNTRIES[n % len(COUNTRIES)],
            },
        }
        for n in range(people)
    ]
    r = await tracking.post("/track/batch", json={"batch": calls})
    assert r.status_code == 200, r.text

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    provider = await add_sendgrid(api, sendgrid, name="SendGrid (primary)")
    r = await api.patch(
        f"/api/v1/providers/{provider['id']}",
        json={"settings": {"base_url": sendgrid.base_url, "webhook_public_key": public}},
    )
    assert r.status_code == 200, r.text

    segments = {}
    for name, definition in (
        ("Everyone", {"type": "trait", "path": "email", "op": "exists"}),
        (
            "Paying customers",
            {"type": "trait", "path": "plan", "op": "in", "value": ["starter", "pro", "enterprise"]},
        ),
        ("Everyone in Germany", {"type": "trait", "path": "country", "op": "eq", "value": "DE"}),
    ):
        r = await api.post("/api/v1/segments", json={"name": name, "definition": definition})
        assert r.status_code == 201, r.text
        segments[name] = r.json()["id"]
    run = await api.post(f"/api/v1/segments/{segments['Paying customers']}/recalculate", params={"wait": 30})
    assert run.json()["status"] == "completed", run.text
    template = await make_template(
        api, name="Monthly newsletter", subject="What's new, {{ profile.first_name }}", html=NEWSLETTER_HTML
    )

    sent = await _campaign(
        api,
        "October newsletter",
        {"template_id": template["id"]},
        [segments["Everyone"]],
        [segments["Everyone in Germany"]],
    )
    assert (await api.post(f"/api/v1/campaigns/{sent}/send")).status_code == 202
    assert (await finished(api, sent))["status"] == "sent"
    demo = CampaignDemo(provider["id"], key, segments, sent)
    messages = await recipients(api, sent)
    await deliver(
        tracking, demo, [m["message_id"] for m in messages[:-1]], bounced=[messages[-1]["message_id"]]
    )
    bodies = [m for m in sendgrid.delivered() if m["subject"].startswith("What's new")]
    await engage(tracking, bodies[:11], clicks=4)

    await _campaign(
        api,
        "Black Friday preview",
        {
            "subject": "Early access for {{ profile.first_name }}",
            "html": NEWSLETTER_HTML,
            "from_email": SENDER,
            "from_name": "Acme Shop",
        },
        [segments["Paying customers"]],
        [],
    )
    winter = await _campaign(
        api,
        "Winter sale",
        {
            "subject": "Winter sale: 30% off",
            "html": NEWSLETTER_HTML,
            "from_email": SENDER,
            "from_name": "Acme Shop",
        },
        [segments["Everyone"]],
        [],
    )
    next_week = (datetime.now(UTC) + timedelta(days=7)).replace(hour=9, minute=0, second=0, microsecond=0)
    r = await api.post(
        f"/api/v1/campaigns/{winter}/schedule",
        json={"scheduled_at": next_week.replace(tzinfo=None).isoformat(), "local_time": True},
    )
    assert r.status_code == 202, r.text
    return demo


async def _campaign(api, name: str, content: dict, segment_ids: list[str], exclude: list[str]) -> str:
    body = {
        "name": name,
        "content": content,
        "audience": {"segment_ids": segment_ids, "exclude_segment_ids": exclude},
    }
    r = await api.post("/api/v1/campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def recipients(api, campaign_id: str) -> list[dict]:
    r = await api.get(f"/api/v1/campaigns/{campaign_id}/recipients", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def deliver(
    tracking: httpx.AsyncClient, demo: CampaignDemo, message_ids: list[str], bounced=()
) -> None:
    """The provider's signed Event Webhook: these messages delivered (or bounced)."""
    now = int(datetime.now(UTC).timestamp())
    events = [
        {"event": "delivered", "sg_event_id": f"dl-{m}", "timestamp": now, "mp_message_id": m}
        for m in message_ids
    ] + [
        {
            "event": "bounce",
            "type": "bounce",
            "reason": "550 no such mailbox",
            "sg_event_id": f"bo-{m}",
            "timestamp": now,
            "mp_message_id": m,
        }
        for m in bounced
    ]
    body = orjson.dumps(events)
    stamp = str(now)
    signature = demo.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=str(tracking.base_url)) as public:
        r = await public.post(f"/webhooks/sendgrid/{demo.provider_id}", content=body, headers=headers)
        assert r.status_code == 200, r.text


async def engage(tracking: httpx.AsyncClient, messages: list[dict], clicks: int) -> None:
    """Readers open every one of these emails (the tracking pixel) and
    click the first link of the first `clicks` of them."""
    async with httpx.AsyncClient(base_url=str(tracking.base_url), follow_redirects=False) as public:
        for n, message in enumerate(messages):
            html = message["html"]
            pixel = re.search(r'src="[^"]+(/o/[^"]+\.gif)"', html).group(1)
            assert (await public.get(pixel)).status_code == 200
            if n < clicks:
                click = re.search(r"""href=["'][^"']+(/c/[^"']+)["']""", html).group(1)
                assert (await public.get(click)).status_code in (302, 303, 307)
