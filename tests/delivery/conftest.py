"""Fixtures for email delivery: fake providers, moto SES, SMTP, API helpers."""

from __future__ import annotations

import boto3
import pytest
from aiosmtpd.controller import Controller

from tests.support.fake_providers import FakeHTTPProvider, SMTPRecorder
from tests.support.servers import free_port, serve

SENDER = "sender@example.com"


@pytest.fixture
async def sendgrid():
    fake = FakeHTTPProvider(token="SG.test-key")
    async with serve(fake.app()) as url:
        fake.base_url = url
        yield fake
        fake.release()


@pytest.fixture
async def mixmax():
    fake = FakeHTTPProvider(token="mixmax-token")
    async with serve(fake.app()) as url:
        fake.base_url = url
        yield fake
        fake.release()


@pytest.fixture
def smtp_server():
    recorder = SMTPRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield recorder, controller.port
    controller.stop()


@pytest.fixture(scope="session")
def moto_ses():
    """moto in server mode over real HTTP, with the sender identity verified."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "sesv2",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_email_identity(EmailIdentity=SENDER)
    yield url
    server.stop()


def ses_sent_messages() -> list:
    """What moto's SES backend holds (same process as the server thread)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


async def make_template(api, **overrides) -> dict:
    body = {
        "name": "Welcome",
        "subject": "Hi {{ profile.first_name }}",
        "from_email": SENDER,
        "from_name": "Team",
        "html": "<html><body><p>Hello {{ profile.first_name }}, code {{ data.code }}</p>"
        "<a href='https://shop.example.com/deal?id=7&amp;x=1'>Deal</a>"
        "<a href='{{ unsubscribe_url }}'>Unsubscribe</a></body></html>",
    } | overrides
    r = await api.post("/api/v1/templates", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def add_provider(api, name: str, kind: str, priority: int, **extra) -> dict:
    r = await api.post("/api/v1/providers", json={"name": name, "kind": kind, "priority": priority, **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def add_sendgrid(
    api, fake: FakeHTTPProvider, priority: int = 10, name: str = "sendgrid", **extra
) -> dict:
    return await add_provider(
        api,
        name,
        "sendgrid",
        priority,
        settings={"base_url": fake.base_url, "timeout": 3},
        credentials={"api_key": fake.token},
        **extra,
    )


async def add_mixmax(api, fake: FakeHTTPProvider, priority: int = 90, name: str = "mixmax") -> dict:
    return await add_provider(
        api,
        name,
        "mixmax",
        priority,
        settings={"base_url": fake.base_url, "timeout": 3},
        credentials={"api_token": fake.token},
    )


async def send(api, template_id: str, email: str, wait: float = 20, **extra) -> dict:
    r = await api.post(
        "/api/v1/messages", params={"wait": wait}, json={"template_id": template_id, "email": email, **extra}
    )
    assert r.status_code == 202, r.text
    return r.json()
