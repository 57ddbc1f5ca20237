"""Provider credentials only go to public hosts: the API refuses private,
loopback, link-local, multicast and unspecified destinations, and the
worker's adapters refuse to connect to them even if one is stored."""

from __future__ import annotations

import uuid

import httpx
import pytest

from delivery.adapters import OutgoingEmail
from delivery.destinations import is_public
from delivery.limits import ProviderLimits
from delivery.router import NoProviderAvailable, ProviderConfig, ProviderRouter
from tests.support.servers import serve

PRIVATE_URLS = [
    "http://127.0.0.1:8080",
    "http://localhost:3001",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest",
    "http://10.1.2.3",
    "http://172.16.0.9",
    "https://192.168.1.10",
    "http://100.64.0.1",
    "http://0.0.0.0",
    "http://224.0.0.1",
    "http://[fe80::1]/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
]


@pytest.fixture(scope="module")
async def strict_api(settings):
    """The management API with private provider hosts refused (the default)."""
    from api.app import create_app

    app = create_app(settings.model_copy(update={"allow_private_provider_hosts": False}))
    async with serve(app) as url:
        yield url


async def test_api_refuses_private_provider_destinations(strict_api, workspace):
    headers = {"Authorization": f"Bearer {workspace.secret_key}"}
    async with httpx.AsyncClient(base_url=strict_api, headers=headers, timeout=30) as api:
        for url in PRIVATE_URLS:
            for kind, setting, credentials in (
                ("sendgrid", "base_url", {"api_key": "SG.k"}),
                ("mixmax", "base_url", {"api_token": "t"}),
                ("ses", "endpoint_url", {}),
            ):
                body = {"name": f"p-{uuid.uuid4().hex[:6]}", "kind": kind, "settings": {setting: url}}
                r = await api.post("/api/v1/providers", json=body | {"credentials": credentials})
                assert r.status_code == 422, (kind, url, r.text)
                [error] = r.json()["detail"]
                assert error["loc"] == f"body.settings.{setting}" and "not a public address" in error["msg"]
        for host in ("127.0.0.1", "localhost", "10.0.0.1", "::1"):
            r = await api.post(
                "/api/v1/providers", json={"name": "m", "kind": "smtp", "settings": {"host": host}}
            )
            assert r.status_code == 422 and "not a public address" in r.text, (host, r.text)
        for bad in ("file:///etc/passwd", "ftp://example.com", "not a url"):
            body = {
                "name": "b",
                "kind": "sendgrid",
                "settings": {"base_url": bad},
                "credentials": {"api_key": "k"},
            }
            assert (await api.post("/api/v1/providers", json=body)).status_code == 422, bad

        # Public destinations (and names this machine cannot resolve) are accepted...
        body = {
            "name": "public",
            "kind": "sendgrid",
            "settings": {"base_url": "https://93.184.215.14"},
            "credentials": {"api_key": "SG.k"},
        }
        created = await api.post("/api/v1/providers", json=body)
        assert created.status_code == 201, created.text
        # ...and cannot be moved to a private one later.
        moved = await api.patch(
            f"/api/v1/providers/{created.json()['id']}", json={"settings": {"base_url": "http://127.0.0.1:9"}}
        )
        assert moved.status_code == 422 and "not a public address" in moved.text
        assert (await api.get(f"/api/v1/providers/{created.json()['id']}")).json()["settings"] == body[
            "settings"
        ]


def test_address_classification():
    for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fe80::1", "fc00::1", "0.0.0.0", "::"):
        assert not is_public(address), address
    for address in ("224.0.0.1", "ff02::1", "::ffff:10.0.0.1", "100.64.0.1", "240.0.0.1"):
        assert not is_public(address), address
    for address in ("93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"):
        assert is_public(address), address


async def test_worker_never_posts_credentials_to_a_private_host(sendgrid, redis_client, settings):
    # A provider row that points at a loopback fake (say, stored before this
    # check existed, or a name that now resolves to 127.0.0.1).
    email = OutgoingEmail(uuid.uuid4(), "to@example.com", "from@example.com", "s", "<p>h</p>", "h")
    limits = ProviderLimits(redis_client, f"{settings.redis_prefix}dest-{uuid.uuid4().hex[:6]}:")
    for base_url in (sendgrid.base_url, sendgrid.base_url.replace("127.0.0.1", "localhost")):
        provider = ProviderConfig(
            id=uuid.uuid4(),
            name="stored",
            kind="sendgrid",
            priority=1,
            rate_limit=None,
            enabled=True,
            settings={"base_url": base_url, "timeout": 3},
            secrets={"api_key": sendgrid.token},
        )
        strict = ProviderRouter(limits)
        with pytest.raises(NoProviderAvailable) as refused:
            await strict.send([provider], email)
        await strict.close()
        assert "not a public address" in str(refused.value)
        assert sendgrid.requests == 0
    allowed = ProviderRouter(limits, allow_private_hosts=True)
    delivery = await allowed.send([provider], email)
    await allowed.close()
    assert delivery.provider_kind == "sendgrid" and sendgrid.requests == 1
