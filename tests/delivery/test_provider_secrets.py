"""Provider credentials are encrypted at rest, still used for sending, and
survive a key rotation; migration 0006 encrypts plaintext rows."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy import text

from core.secret_box import PREFIX, SecretBox, SecretUnreadable, derive_key
from db.engine import session_scope
from db.migrate import alembic_config
from delivery import repository as repo
from delivery.sender import provider_config
from delivery.service import rotate_provider_secrets
from tests.delivery.conftest import add_sendgrid, make_template, send


async def _stored(engine, provider_id) -> dict:
    async with engine.connect() as conn:
        return (
            await conn.execute(text("SELECT secrets FROM providers WHERE id = :id"), {"id": provider_id})
        ).scalar_one()


async def _raw_column(engine, provider_id) -> str:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT secrets::text FROM providers WHERE id = :id"), {"id": provider_id}
            )
        ).scalar_one()


async def test_credentials_are_encrypted_at_rest_and_still_send(api, worker, sendgrid, engine, settings):
    provider = await add_sendgrid(api, sendgrid)
    raw = await _raw_column(engine, provider["id"])
    assert sendgrid.token not in raw and "SG." not in raw
    stored = await _stored(engine, provider["id"])
    assert list(stored) == ["api_key"] and stored["api_key"].startswith(PREFIX)
    assert SecretBox.from_settings(settings).decrypt(stored["api_key"]) == sendgrid.token
    # The worker decrypts it: the fake provider only accepts the right bearer token.
    template = await make_template(api)
    assert (await send(api, template["id"], "enc@example.com"))["status"] == "sent"
    assert sendgrid.received

    patched = await api.patch(
        f"/api/v1/providers/{provider['id']}", json={"credentials": {"api_key": "SG.new"}}
    )
    assert patched.status_code == 200 and patched.json()["credentials_set"] == ["api_key"]
    raw = await _raw_column(engine, provider["id"])
    assert "SG.new" not in raw and raw.count(PREFIX) == 1


async def test_rotation_keeps_old_rows_readable(api, sendgrid, engine, sessionmaker, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old = settings.model_copy(update={"secrets_keys": old_key})
    both = settings.model_copy(update={"secrets_keys": f"{new_key},{old_key}"})
    only_new = settings.model_copy(update={"secrets_keys": new_key, "secret_key": "another-secret"})
    provider = await add_sendgrid(api, sendgrid, name="rotating")
    provider_id = uuid.UUID(provider["id"])
    async with session_scope(sessionmaker) as session:
        # Stored under the old key, as a deployment with SECRETS_KEYS=old would have.
        await repo.set_provider_secrets(
            session, provider_id, SecretBox.from_settings(old).encrypt_values({"api_key": "SG.rotate-me"})
        )

    async def read(with_settings) -> str:
        async with engine.connect() as conn:
            row = await repo.provider_by_id(conn, provider_id)
        return provider_config(row, SecretBox.from_settings(with_settings)).secrets["api_key"]

    # New key first: old rows stay readable before any rotation.
    assert await read(both) == "SG.rotate-me"
    with pytest.raises(SecretUnreadable):
        await read(only_new)
    async with session_scope(sessionmaker) as session:
        assert await rotate_provider_secrets(session, SecretBox.from_settings(both)) >= 1
    # After the rotation the old key can go.
    assert await read(only_new) == "SG.rotate-me"
    assert "SG.rotate-me" not in await _raw_column(engine, provider_id)
    # Rotation covers every workspace: rotate back to the suite's own key for the tests after this one.
    async with session_scope(sessionmaker) as session:
        back = SecretBox([derive_key(settings.secret_key), new_key.encode()])
        await rotate_provider_secrets(session, back)


async def test_migration_encrypts_plaintext_rows(api, sendgrid, engine, sessionmaker, settings):
    provider = await add_sendgrid(api, sendgrid, name="legacy")
    cfg = alembic_config(settings.database_url)
    cfg.attributes["settings"] = settings
    await asyncio.to_thread(command.downgrade, cfg, "0006-1")
    try:
        # Before 0006 the column held plaintext.
        assert (await _stored(engine, provider["id"])) == {"api_key": sendgrid.token}
        async with session_scope(sessionmaker) as session:
            await repo.set_provider_secrets(session, uuid.UUID(provider["id"]), {"api_key": "SG.plain"})
    finally:
        await asyncio.to_thread(command.upgrade, cfg, "head")
    stored = await _stored(engine, provider["id"])
    assert stored["api_key"].startswith(PREFIX) and "SG.plain" not in await _raw_column(
        engine, provider["id"]
    )
    assert SecretBox.from_settings(settings).decrypt(stored["api_key"]) == "SG.plain"
