"""Creating workspaces and keys; authenticating requests by key.

Keys look like `pk_<32 base62>` (public: tracking) and `sk_<32 base62>`
(secret: management API). Only their SHA-256 hash is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core.errors import Forbidden, Unauthorized
from core.ids import uuid7
from workspaces import repository as repo
from workspaces.repository import KeyRow
from workspaces.schemas import WorkspaceSettings

_ALPHABET = string.ascii_letters + string.digits
KIND_PREFIX = {"public": "pk_", "secret": "sk_"}


@dataclass(frozen=True, slots=True)
class WorkspaceKeys:
    """A workspace and a fresh key pair, shown once at creation."""

    workspace_id: uuid.UUID
    public_key: str
    secret_key: str


def hash_key(raw: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(raw.encode()).hexdigest()


def _new_key(kind: str) -> str:
    return KIND_PREFIX[kind] + "".join(secrets.choice(_ALPHABET) for _ in range(32))


async def create_workspace_keys(session: AsyncSession, name: str) -> WorkspaceKeys:
    """Get or create the workspace `name` and add a public and a secret key."""
    workspace_id = await repo.get_or_create_workspace(session, uuid7(), name)
    keys: dict[str, str] = {}
    for kind in ("public", "secret"):
        raw = _new_key(kind)
        await repo.insert_key(
            session,
            key_id=uuid7(),
            workspace_id=workspace_id,
            kind=kind,
            prefix=raw[:11],
            key_hash=hash_key(raw),
        )
        keys[kind] = raw
    return WorkspaceKeys(workspace_id, keys["public"], keys["secret"])


class KeyAuthenticator:
    """Resolves keys to workspaces, caching answers for a few seconds so the
    tracking hot path does not query PostgreSQL per request. A revoked key
    stops working within `ttl` seconds."""

    def __init__(self, engine: AsyncEngine, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, KeyRow | None]] = {}

    async def resolve(self, raw: str | None) -> KeyRow:
        """The key's row, or Unauthorized."""
        if not raw:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        now = time.monotonic()
        hit = self._cache.get(raw)
        if hit is not None and hit[0] > now:
            row = hit[1]
        else:
            async with self._engine.begin() as conn:
                row = await repo.touch_active_key(conn, hash_key(raw))
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[raw] = (now + self._ttl, row)
        if row is None:
            raise Unauthorized("unknown or revoked API key")
        return row

    async def require(self, raw: str | None, kind: str) -> KeyRow:
        """The key's row if it is of `kind`; Forbidden for the other kind."""
        row = await self.resolve(raw)
        if row.kind != kind:
            if kind == "public":
                raise Forbidden(
                    "this endpoint takes a public key (pk_...); never ship a secret key to clients"
                )
            raise Forbidden("the management API needs a secret key (sk_...)")
        return row


async def get_workspace_settings(session: AsyncSession, workspace_id: uuid.UUID) -> WorkspaceSettings:
    """Settings with defaults filled in."""
    return WorkspaceSettings.model_validate(await repo.get_settings(session, workspace_id))


async def update_workspace_settings(
    session: AsyncSession, workspace_id: uuid.UUID, values: WorkspaceSettings
) -> WorkspaceSettings:
    """Store settings (all fields)."""
    stored = await repo.merge_settings(session, workspace_id, values.model_dump())
    return WorkspaceSettings.model_validate(stored)
