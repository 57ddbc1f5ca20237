"""The dashboard session: a signed, HttpOnly, SameSite=Lax cookie holding
the workspace, the id of the secret key used to sign in (re-checked on
every page, so revoking the key signs the session out), a CSRF token and
an expiry. Signed with HMAC-SHA256 under a key derived from SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import orjson

COOKIE = "mp_session"
LOGIN_CSRF_COOKIE = "mp_login_csrf"
LIFETIME_SECONDS = 12 * 3600


@dataclass(frozen=True)
class WebSession:
    """Who is signed in."""

    workspace_id: uuid.UUID
    key_id: uuid.UUID
    csrf: str
    expires: int


class SessionSigner:
    """Signs and reads session cookies."""

    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"mp-web-session:" + secret_key.encode()).digest()

    def _mac(self, payload: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest())
            .decode()
            .rstrip("=")
        )

    def issue(self, workspace_id: uuid.UUID, key_id: uuid.UUID) -> tuple[str, WebSession]:
        """A new session and its cookie value."""
        session = WebSession(
            workspace_id, key_id, secrets.token_urlsafe(24), int(time.time()) + LIFETIME_SECONDS
        )
        payload = orjson.dumps(
            {"w": str(workspace_id), "k": str(key_id), "c": session.csrf, "e": session.expires}
        )
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._mac(body.encode())}", session

    def read(self, cookie: str | None) -> WebSession | None:
        """The session of a cookie, or None (missing, forged, expired, malformed)."""
        if not cookie or len(cookie) > 1000 or "." not in cookie:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = WebSession(uuid.UUID(data["w"]), uuid.UUID(data["k"]), str(data["c"]), int(data["e"]))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return session if session.expires > time.time() else None


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens (both present)."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
