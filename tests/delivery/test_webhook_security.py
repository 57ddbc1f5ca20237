"""Provider webhooks stay inside their provider's workspace, and signed
events older (or newer) than the freshness window are refused."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from delivery.webhooks import sns_string_to_sign
from tests.conftest import new_workspace
from tests.delivery.conftest import add_provider, add_sendgrid, make_template, send
from tests.support.fake_providers import FakeHTTPProvider, text_route
from tests.support.servers import serve


def _sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(public).decode()


def _sendgrid_headers(key: ec.EllipticCurvePrivateKey, stamp: str, body: bytes) -> dict[str, str]:
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


async def _sendgrid_with_key(api, fake) -> tuple[dict, ec.EllipticCurvePrivateKey]:
    key, public = _sendgrid_key()
    provider = await add_provider(
        api,
        "sendgrid",
        "sendgrid",
        10,
        settings={"base_url": fake.base_url, "webhook_public_key": public},
        credentials={"api_key": fake.token},
    )
    return provider, key


async def _other_workspace_client(api_app, sessionmaker) -> httpx.AsyncClient:
    other = await new_workspace(sessionmaker)
    return httpx.AsyncClient(
        base_url=api_app.state.base_url, headers={"Authorization": f"Bearer {other.secret_key}"}, timeout=30
    )


async def test_sendgrid_webhook_cannot_touch_another_workspace(
    api, api_app, sessionmaker, tracking_app, worker, sendgrid
):
    # Workspace B sends a real message; workspace A owns a correctly keyed webhook.
    async with await _other_workspace_client(api_app, sessionmaker) as victim:
        await add_sendgrid(victim, sendgrid)
        template = await make_template(victim)
        target = await send(victim, template["id"], "victim@example.com")
        assert target["status"] == "sent"
        attacker_provider, key = await _sendgrid_with_key(api, sendgrid)

        now = int(dt.datetime.now(dt.UTC).timestamp())
        events = [
            {
                "event": "spamreport",
                "email": "victim@example.com",
                "sg_event_id": f"by-our-id-{uuid.uuid4()}",
                "timestamp": now,
                "mp_message_id": target["id"],
            },
            {
                "event": "bounce",
                "type": "bounce",
                "email": "victim@example.com",
                "sg_event_id": f"by-their-id-{uuid.uuid4()}",
                "timestamp": now,
                "sg_message_id": f"{target['provider_message_id']}.filter0001",
            },
        ]
        body = orjson.dumps(events)
        async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
            r = await client.post(
                f"/webhooks/sendgrid/{attacker_provider['id']}",
                content=body,
                headers=_sendgrid_headers(key, str(now), body),
            )
        assert r.status_code == 200 and r.json()["recorded"] == 0, r.text
        shown = (await victim.get(f"/api/v1/messages/{target['id']}")).json()
        assert shown["status"] == "sent"
        assert [e["name"] for e in shown["events"]] == ["Email Sent"]
        assert (await victim.get("/api/v1/suppressions")).json()["data"] == []


async def test_sendgrid_replayed_or_future_events_are_refused(api, tracking_app, worker, sendgrid):
    provider, key = await _sendgrid_with_key(api, sendgrid)
    template = await make_template(api)
    message = await send(api, template["id"], "replayed@example.com")
    url = f"/webhooks/sendgrid/{provider['id']}"
    now = int(dt.datetime.now(dt.UTC).timestamp())
    async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
        for stamp in (now - 30 * 86400, now + 3600, "not-a-number"):
            body = orjson.dumps(
                [
                    {
                        "event": "spamreport",
                        "email": "replayed@example.com",
                        "sg_event_id": f"old-{stamp}",
                        "timestamp": now - 30 * 86400,
                        "mp_message_id": message["id"],
                    }
                ]
            )
            r = await client.post(url, content=body, headers=_sendgrid_headers(key, str(stamp), body))
            assert r.status_code == 401, (stamp, r.text)
            assert "timestamp" in r.json()["detail"]
        # A fresh signature over the same event is accepted.
        r = await client.post(url, content=body, headers=_sendgrid_headers(key, str(now - 60), body))
        assert r.status_code == 200 and r.json()["recorded"] == 1
    assert (await api.get(f"/api/v1/messages/{message['id']}")).json()["status"] == "complained"


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


async def test_ses_webhook_isolation_and_freshness(
    api, api_app, sessionmaker, tracking_app, worker, moto_ses, sendgrid
):
    key, pem = _sns_cert()
    sns = FakeHTTPProvider(extra_routes={"/cert.pem": text_route(pem)})
    ses_settings = {
        "settings": {"endpoint_url": moto_ses},
        "credentials": {"access_key_id": "test", "secret_access_key": "test"},
    }
    async with serve(sns.app()) as sns_url, await _other_workspace_client(api_app, sessionmaker) as victim:
        victim_provider = await add_provider(victim, "ses", "ses", 1, **ses_settings)
        template = await make_template(victim)
        target = await send(victim, template["id"], "ses-victim@example.com")
        assert target["status"] == "sent"
        attacker = await add_provider(api, "ses", "ses", 1, **ses_settings)

        def notification(mail: dict, at: dt.datetime) -> bytes:
            msg = {
                "Type": "Notification",
                "MessageId": str(uuid.uuid4()),
                "TopicArn": "arn:aws:sns:us-east-1:1:ses",
                "Message": orjson.dumps({"eventType": "Complaint", "mail": mail}).decode(),
                "Timestamp": at.isoformat().replace("+00:00", "Z"),
                "SignatureVersion": "2",
                "SigningCertURL": f"{sns_url}/cert.pem",
            }
            signature = key.sign(sns_string_to_sign(msg), padding.PKCS1v15(), hashes.SHA256())
            return orjson.dumps(msg | {"Signature": base64.b64encode(signature).decode()})

        now = dt.datetime.now(dt.UTC)
        url = f"/webhooks/ses/{attacker['id']}"
        async with httpx.AsyncClient(base_url=tracking_app.state.base_url) as client:
            for mail in (
                {"messageId": target["provider_message_id"]},
                {"messageId": "x", "tags": {"mp_message_id": [target["id"]]}},
            ):
                r = await client.post(url, content=notification(mail, now))
                assert r.status_code == 200 and r.json()["status"] == "ignored: unknown message", r.text
            # The victim's own webhook with a 30-day-old signed event: refused.
            own = f"/webhooks/ses/{victim_provider['id']}"
            stale = notification({"messageId": target["provider_message_id"]}, now - dt.timedelta(days=30))
            r = await client.post(own, content=stale)
            assert r.status_code == 401 and "timestamp" in r.json()["detail"], r.text
            # Bound to its own topic, the victim's webhook refuses a message of another.
            patched = await victim.patch(
                f"/api/v1/providers/{victim_provider['id']}",
                json={
                    "settings": ses_settings["settings"] | {"sns_topic_arn": "arn:aws:sns:us-east-1:2:mine"}
                },
            )
            assert patched.status_code == 200, patched.text
            foreign = notification({"messageId": target["provider_message_id"]}, now)
            r = await client.post(own, content=foreign)
            assert r.status_code == 401 and "topic" in r.json()["detail"], r.text
        sns.release()
        shown = (await victim.get(f"/api/v1/messages/{target['id']}")).json()
        assert shown["status"] == "sent"
        assert (await victim.get("/api/v1/suppressions")).json()["data"] == []
