"""Provider credentials encrypted at rest: every plaintext value of
`providers.secrets` becomes `fernet:<token>` (see core/secret_box.py).

The key is the one the apps use: the Settings passed to `db.migrate.upgrade`
(`mp up` passes its own), else SECRETS_KEYS / SECRET_KEY from the
environment. Values already encrypted are left as they are. Downgrade
decrypts them back to plaintext.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import json

import sqlalchemy as sa
from alembic import context, op

from core.secret_box import PREFIX, SecretBox
from core.settings import get_settings

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _box() -> SecretBox:
    settings = context.config.attributes.get("settings") or get_settings()
    return SecretBox.from_settings(settings)


def _rewrite(change) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, secrets FROM providers FOR UPDATE")).all()
    for provider_id, secrets in rows:
        rewritten = {name: change(value) for name, value in (secrets or {}).items()}
        if rewritten != secrets:
            conn.execute(
                sa.text("UPDATE providers SET secrets = CAST(:secrets AS jsonb) WHERE id = :id"),
                {"id": provider_id, "secrets": json.dumps(rewritten)},
            )


def upgrade() -> None:
    box = _box()
    _rewrite(lambda value: value if value.startswith(PREFIX) else box.encrypt(value))


def downgrade() -> None:
    box = _box()
    _rewrite(box.decrypt)
