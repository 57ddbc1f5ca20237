"""Opens, clicks and unsubscribes through signed links; provider webhooks
(SendGrid's signed Event Webhook, SES through signed SNS)."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid

import httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from delivery.webhooks import sns_string_to_sign
from tests.delivery.conftest import add_provider, add_sendgrid, make_template, send
from tests.support.fake_providers import FakeHTTPProvider, text_route
from tests.support.servers import serve


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


async def _event_names(engine, workspace) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT name FROM events WHERE workspace_id = :ws AND name LIKE 'Email %' "
                "ORDER BY occurred_at, name"
            ),
            {"ws": workspace.workspace_id},
        )
        return [r[0] for r in rows]


async def _sent_message(api, sendgrid, address: str) -> tuple[dict, str]:
    await add_sendgrid(api, sendgrid)
    template = await make_template(api)
    message = await send(api, template["id"], address)
    assert message["status"] == "sent"
    payload = sendgrid.received[-1]
    html = next(c["value"] for c in payload["content"] if c["type"] == "text/html")
    return message, html


async def test_open_click_and_no_open_redirect(api, tracking_app, worker, sendgrid, engine, workspace):
    message, html = await _sent_message(api, sendgrid, "reader@example.com")
    pixel = re.search(r'src="([^"]+/o/[^"]+\.gif)"', html).group(1)
    click = re.search(r"href=['\"]([^'\"]+/c/[^'\"]+)['\"]", html).group(1)
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        gif = await client.get(_path(pixel))
        assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
        redirect = await client.get(_path(click))
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "https://shop.example.com/deal?id=7&x=1"
        # A token cannot be bent to another destination or message.
        token = _path(click).split("/c/")[1]
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        assert (await client.get(f"/c/{tampered}")).status_code == 404
        assert (await client.get("/c/not-a-token")).status_code == 404
        assert (await client.get("/o/garbage.gif")).status_code == 200  # still a pixel, records nothing
    shown = (await api.get(f"/api/v1/messages/{message['id']}")).json()
    assert shown["opened_at"] and shown["clicked_at"]
    assert await _event_names(engine, workspace) == ["Email Sent", "Email Opened", "Email Clicked"]
    clicked = next(e for e in shown["events"] if e["name"] == "Email Clicked")
    assert clicked["properties"]["url"] == "https://shop.example.com/deal?id=7&x=1"


async def test_unsubscribe_page_and_one_click(api, tracking_app, worker, sendgrid, engine, workspace):
    await _sent_message(api, sendgrid, "leaver@example.com")
    header = sendgrid.received[-1]["headers"]["List-Unsubscribe"].strip("<>")
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        page = await client.get(_path(header))
        assert page.status_code == 200 and "leaver@example.com" in page.text and "<form" in page.text
        assert (await api.get("/api/v1/suppressions")).json()["data"] == []  # a GET changes nothing
        done = await client.post(
            _path(header),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and "Unsubscribed" in done.text
        again = await client.post(_path(header), content=b"List-Unsubscribe=One-Click")
        assert again.status_code == 200
        assert (await client.post("/u/forged")).status_code == 404
    [suppression] = (await api.get("/api/v1/suppressions")).json()["data"]
    assert suppression["email"] == "leaver@example.com" and suppression["reason"] == "unsubscribed"
    assert (await _event_names(engine, workspace)).count("Email Unsubscribed") == 1
    # And nothing is sent to them again.
    template = (await api.get("/api/v1/templates")).json()["data"][0]
    assert (await send(api, template["id"], "leaver@example.com"))["status"] == "suppressed"


async def test_sendgrid_webhook_signed_events(api, tracking_app, worker, sendgrid, engine, workspace):
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    provider = await add_sendgrid(api, sendgrid)
    await api.patch(
        f"/api/v1/providers/{provider['id']}",
        json={"settings": {"base_url": sendgrid.base_url, "webhook_public_key": public}},
    )
    template = await make_template(api)
    message = await send(api, template["id"], "bouncer@example.com")
    now = int(dt.datetime.now(dt.UTC).timestamp())
    batch = orjson.dumps(
        [
            {
                "email": "bouncer@example.com",
                "event": "delivered",
                "sg_event_id": "ev-1",
                "timestamp": now,
                "sg_message_id": f"{message['provider_message_id']}.filter",
                "mp_message_id": message["id"],
            },
            {
                "email": "bouncer@example.com",
                "event": "bounce",
                "type": "bounce",
                "reason": "550 no mailbox",
                "sg_event_id": "ev-2",
                "timestamp": now + 1,
                "mp_message_id": message["id"],
            },
        ]
    )
    stamp = str(now)

    def signed(body: bytes) -> dict[str, str]:
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        }

    url = f"/webhooks/sendgrid/{provider['id']}"
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        forged = dict(signed(batch))
        forged["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(
            b"\x30\x06\x02\x01\x01\x02\x01\x01"
        ).decode()
        assert (await client.post(url, content=batch, headers=forged)).status_code == 401
        tampered = batch.replace(b"550 no mailbox", b"250 ok")
        assert (await client.post(url, content=tampered, headers=signed(batch))).status_code == 401
        assert (await api.get(f"/api/v1/messages/{message['id']}")).json()["status"] == "sent"  # unchanged

        ok = await client.post(url, content=batch, headers=signed(batch))
        assert ok.status_code == 200 and ok.json()["recorded"] == 2
        duplicate = await client.post(url, content=batch, headers=signed(batch))
        assert duplicate.json()["recorded"] == 0
    shown = (await api.get(f"/api/v1/messages/{message['id']}")).json()
    assert shown["status"] == "bounced" and shown["delivered_at"]
    names = await _event_names(engine, workspace)
    assert names.count("Email Delivered") == 1 and names.count("Email Bounced") == 1
    [suppression] = (await api.get("/api/v1/suppressions")).json()["data"]
    assert suppression["email"] == "bouncer@example.com" and suppression["reason"] == "hard_bounce"


def _sns_cert() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_ses_events_through_signed_sns(api, tracking_app, worker, moto_ses, engine, workspace):
    key, pem = _sns_cert()
    confirmations: list[str] = []

    async def confirm(request):
        from starlette.responses import PlainTextResponse

        confirmations.append(str(request.url))
        return PlainTextResponse("<ConfirmSubscriptionResponse/>")

    sns = FakeHTTPProvider(extra_routes={"/cert.pem": text_route(pem), "/confirm": confirm})
    async with serve(sns.app()) as sns_url:
        provider = await add_provider(
            api,
            "ses",
            "ses",
            1,
            settings={"endpoint_url": moto_ses},
            credentials={"access_key_id": "test", "secret_access_key": "test"},
        )
        template = await make_template(api)
        message = await send(api, template["id"], "complainer@example.com")
        assert message["status"] == "sent"

        def sns_message(kind: str, **fields) -> dict:
            msg = {
                "Type": kind,
                "MessageId": str(uuid.uuid4()),
                "TopicArn": "arn:aws:sns:us-east-1:1:ses",
                "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                "SignatureVersion": "2",
                "SigningCertURL": f"{sns_url}/cert.pem",
                **fields,
            }
            signature = key.sign(sns_string_to_sign(msg), padding.PKCS1v15(), hashes.SHA256())
            msg["Signature"] = base64.b64encode(signature).decode()
            return msg

        url = f"/webhooks/ses/{provider['id']}"
        complaint = sns_message(
            "Notification",
            Message=orjson.dumps(
                {
                    "eventType": "Complaint",
                    "mail": {"messageId": message["provider_message_id"]},
                    "complaint": {"complainedRecipients": [{"emailAddress": "complainer@example.com"}]},
                }
            ).decode(),
        )
        async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
            subscribe = sns_message(
                "SubscriptionConfirmation",
                Message="confirm",
                Token="t",
                SubscribeURL=f"{sns_url}/confirm?token=t",
            )
            assert (await client.post(url, content=orjson.dumps(subscribe))).status_code == 200
            assert len(confirmations) == 1

            forged = dict(complaint, Message=complaint["Message"].replace("Complaint", "Delivery"))
            assert (await client.post(url, content=orjson.dumps(forged))).status_code == 401
            elsewhere = dict(complaint, SigningCertURL="https://attacker.example/cert.pem")
            assert (await client.post(url, content=orjson.dumps(elsewhere))).status_code == 401

            assert (await client.post(url, content=orjson.dumps(complaint))).status_code == 200
            assert (await client.post(url, content=orjson.dumps(complaint))).status_code == 200  # duplicate
        sns.release()
    shown = (await api.get(f"/api/v1/messages/{message['id']}")).json()
    assert shown["status"] == "complained"
    assert (await _event_names(engine, workspace)).count("Email Complained") == 1
    [suppression] = (await api.get("/api/v1/suppressions")).json()["data"]
    assert suppression["reason"] == "complaint"
