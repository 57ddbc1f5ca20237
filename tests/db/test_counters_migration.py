"""Migration 0013_campaign_counters counts the campaigns that exist: their
messages learn their snapshot's campaign and A/B variant, and the
counters equal a recount from the rows; a downgrade and upgrade again
count them the same.

It runs on a database of its own migrated to exactly this revision, so
later migrations are never downgraded under the suite's shared database."""

from __future__ import annotations

import asyncio
import uuid

from alembic import command
from sqlalchemy import text

from tests.campaigns.support import assert_counted
from tests.db.migration_support import own_database

REVISION = "0013"

# A sent A/B campaign of 40: a test group of 8 (variants 0 and 1), the
# rest cancelled, capped or still pending; messages of every outcome over
# two providers, some opened and clicked.
SEED_SQL = [
    "INSERT INTO workspaces (id, name) VALUES (:w, :n)",
    "INSERT INTO campaigns (id, workspace_id, name, content, audience) VALUES (:c, :w, 'Old', '{}', '{}')",
    """INSERT INTO campaign_recipients (campaign_id, seq, workspace_id, profile_id, email, message_id,
                                        variant, status)
       SELECT :c, g, :w, gen_random_uuid(), 'p' || g || '@example.com', gen_random_uuid(),
              CASE WHEN g <= 8 THEN g % 2 END,
              CASE WHEN g > 36 THEN 'cancelled' WHEN g > 32 THEN 'capped' ELSE 'pending' END
       FROM generate_series(1, 40) g""",
    """INSERT INTO messages (id, workspace_id, idempotency_key, profile_id, email, campaign_id, status,
                             provider_kind, sent_at, delivered_at, opened_at, clicked_at)
       SELECT r.message_id, r.workspace_id, 'campaign:' || r.seq, r.profile_id, r.email,
              CAST(r.campaign_id AS text),
              (ARRAY['sent', 'delivered', 'bounced', 'complained', 'failed', 'queued', 'sending'])
                  [1 + r.seq % 7],
              CASE WHEN r.seq % 7 NOT IN (4, 5, 6) THEN (ARRAY['ses', 'sendgrid'])[1 + r.seq % 2] END,
              CASE WHEN r.seq % 7 < 4 THEN now() END, CASE WHEN r.seq % 7 IN (1, 2) THEN now() END,
              CASE WHEN r.seq % 3 = 0 AND r.seq % 7 < 4 THEN now() END,
              CASE WHEN r.seq % 5 = 0 AND r.seq % 7 < 4 THEN now() END
       FROM campaign_recipients r WHERE r.campaign_id = :c AND r.seq <= 30""",
    # A transactional message that names the campaign: not part of its snapshot, not counted.
    """INSERT INTO messages (id, workspace_id, idempotency_key, email, campaign_id, status, sent_at)
       SELECT gen_random_uuid(), :w, 'api-1', 'x@example.com', CAST(id AS text), 'sent', now()
       FROM campaigns WHERE id = :c""",
]


async def test_existing_campaigns_are_counted(pg_server, settings):
    async with own_database(pg_server, settings) as (engine, cfg):
        await asyncio.to_thread(command.upgrade, cfg, f"{REVISION}-1")
        ws, campaign = uuid.uuid4(), uuid.uuid4()
        async with engine.begin() as conn:
            for sql in SEED_SQL:
                await conn.execute(text(sql), {"w": ws, "n": str(ws), "c": campaign})
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        totals = await assert_counted(engine, str(campaign))
        assert (totals["recipients"], totals["cancelled"], totals["capped"]) == (40, 4, 4)
        assert totals["sent"] == 18 and totals["pending"] == 8 + 2  # 8 queued or sending, 2 with no message
        await asyncio.to_thread(command.downgrade, cfg, f"{REVISION}-1")
        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        assert await assert_counted(engine, str(campaign)) == totals
