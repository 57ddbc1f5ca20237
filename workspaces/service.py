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
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core.errors import Forbidden, TooManyRequests, Unauthorized
from core.ids import uuid7
from workspaces import repository as repo
from workspaces.auth_limiter import AuthFailureLimiter
from workspaces.repository import KeyRow
from workspaces.schemas import WorkspaceSettings

_ALPHABET = string.ascii_letters + string.digits
KIND_PREFIX = {"public": "pk_", "secret": "sk_"}
LAST_USED_EVERY_SECONDS = 60.0
"""`api_keys.last_used_at` is written at most this often per key (lookups only read)."""


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
    stops working within `ttl` seconds.

    Unknown keys are cached too (apart from known ones, so a storm of them
    cannot push valid keys out), and a lookup only reads: `last_used_at` is
    written at most once a minute per key. With a `limiter`, a client whose
    failed lookups exceed its budget gets 429 before any lookup."""

    def __init__(
        self,
        engine: AsyncEngine,
        ttl: float = 10.0,
        max_entries: int = 10_000,
        limiter: AuthFailureLimiter | None = None,
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._max = max_entries
        self._limiter = limiter
        self._known: OrderedDict[str, tuple[float, KeyRow]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._touched: dict[uuid.UUID, float] = {}

    @staticmethod
    def _remember(cache: OrderedDict, raw: str, value: object, limit: int) -> None:
        cache[raw] = value
        cache.move_to_end(raw)
        while len(cache) > limit:
            cache.popitem(last=False)

    async def _lookup(self, raw: str, now: float) -> KeyRow | None:
        async with self._engine.connect() as conn:
            row = await repo.find_active_key(conn, hash_key(raw))
            if row is not None and now - self._touched.get(row.id, -LAST_USED_EVERY_SECONDS) >= (
                LAST_USED_EVERY_SECONDS
            ):
                if len(self._touched) >= self._max:
                    self._touched.clear()
                self._touched[row.id] = now
                await repo.touch_key(conn, row.id, LAST_USED_EVERY_SECONDS)
                await conn.commit()
        return row

    async def resolve(self, raw: str | None, client: str | None = None) -> KeyRow:
        """The key's row, or Unauthorized (TooManyRequests when `client` has
        failed too often)."""
        if not raw:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        now = time.monotonic()
        hit = self._known.get(raw)
        if hit is not None and hit[0] > now:
            return hit[1]
        unknown_until = self._unknown.get(raw)
        if unknown_until is not None and unknown_until > now:
            raise Unauthorized("unknown or revoked API key")
        if self._limiter is not None and client:
            wait = await self._limiter.retry_after(client)
            if wait is not None:
                raise TooManyRequests(
                    "too many requests with unknown API keys from this address", retry_after=wait
                )
        row = await self._lookup(raw, now)
        if row is None:
            self._known.pop(raw, None)
            self._remember(self._unknown, raw, now + self._ttl, self._max)
            if self._limiter is not None and client:
                await self._limiter.failed(client)
            raise Unauthorized("unknown or revoked API key")
        self._unknown.pop(raw, None)
        self._remember(self._known, raw, (now + self._ttl, row), self._max)
        return row

    async def require(self, raw: str | None, kind: str, client: str | None = None) -> KeyRow:
        """The key's row if it is of `kind`; Forbidden for the other kind."""
        row = await self.resolve(raw, client)
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
