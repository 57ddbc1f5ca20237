"""Encryption at rest for provider credentials.

Each credential value in `providers.secrets` is stored as
`fernet:<token>` (Fernet: AES-128-CBC with HMAC-SHA256, from
`cryptography`); the names stay readable so the API can list which
credentials are set without decrypting anything.

Keys: `SECRETS_KEYS` is a comma-separated list of Fernet keys (make one
with `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
The first encrypts; every key decrypts. A key derived from `SECRET_KEY`
(HKDF-SHA256) is always the last decryption key, and the encryption key
when `SECRETS_KEYS` is empty, so a deployment that starts without
`SECRETS_KEYS` can add one later without losing its stored credentials.

Rotation: put the new key first (`SECRETS_KEYS=new,old`), restart, run
`mp keys rotate-secrets` (re-encrypts every value with the new key), then
drop the old key. A value without the prefix is a plaintext left from
before encryption: it is read as is and encrypted by the next rotation
(migration 0006 encrypts them all).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """A stored credential does not decrypt with any configured key."""


def derive_key(secret_key: str) -> bytes:
    """The Fernet key derived from SECRET_KEY."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mp provider secrets v1").derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(raw)


class SecretBox:
    """Encrypts and decrypts credential values with a list of Fernet keys."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_settings(cls, settings: Any) -> SecretBox:
        """The box for SECRETS_KEYS (then the key derived from SECRET_KEY)."""
        return _box(settings.secrets_keys, settings.secret_key)

    def encrypt(self, value: str) -> str:
        """`fernet:<token>` for a plaintext value."""
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The plaintext of a stored value (a legacy plaintext value as is)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored provider credential does not decrypt with SECRETS_KEYS or the key derived "
                "from SECRET_KEY; restore the key it was encrypted with"
            ) from None

    def rotate(self, stored: str) -> str:
        """The value re-encrypted with the first key (plaintext: encrypted)."""
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("a stored provider credential does not decrypt with any key") from None

    def encrypt_values(self, values: Mapping[str, str]) -> dict[str, str]:
        """Every value encrypted, names kept."""
        return {name: self.encrypt(value) for name, value in values.items()}

    def decrypt_values(self, values: Mapping[str, str]) -> dict[str, str]:
        """Every value decrypted, names kept."""
        return {name: self.decrypt(value) for name, value in values.items()}


@lru_cache(maxsize=8)
def _box(secrets_keys: str, secret_key: str) -> SecretBox:
    keys = [k.strip().encode() for k in secrets_keys.split(",") if k.strip()]
    return SecretBox([*keys, derive_key(secret_key)])
