"""Campaign counters: a campaign's stats kept as running sums, so its page
and the campaigns list read a few rows whatever the campaign's size
(counting its snapshot joined to its messages cost ~50 ms at 10,000
recipients and grew with them).

Triggers keep them: after each statement that inserts or updates
`campaign_recipients` or a campaign's `messages`, the rows' contributions
after the change minus those before are added up per (campaign, A/B
variant, provider) in the same transaction. Every path that changes a
row (sends, webhooks, opens, clicks, caps, cancels) is counted the one
way, and a repeated open or webhook, which changes no counted column,
adds nothing. Each backend adds into its own shard of a counter (its
process id modulo `SHARDS`), so concurrent sends and opens of one
campaign seldom wait on one row. Messages carry the campaign whose
snapshot they belong to (`recipient_campaign_id`, and the A/B test
group's `recipient_variant`): `campaign_id` is free text an API caller
may set on a transactional message.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SHARDS = 8

COUNTERS = [
    "recipients",
    "waiting",
    "cancelled",
    "capped",
    "messages",
    "settled",
    "sent",
    "delivered",
    "bounced",
    "complained",
    "failed",
    "suppressed",
    "unknown",
    "unique_opens",
    "unique_clicks",
]

# What one row adds: its counter key, then its counters (others add 0).
# `waiting`: recipients still `pending`; `settled`: messages past sending
# (not cancelled) — a recipient is pending while waiting and not settled.
RECIPIENT_ROW = {
    "campaign_id": "campaign_id",
    "variant": "coalesce(variant, -1)",
    "provider": "''",
    "recipients": "1",
    "waiting": "(status = 'pending')::int",
    "cancelled": "(status = 'cancelled')::int",
    "capped": "(status = 'capped')::int",
}
MESSAGE_ROW = {
    "campaign_id": "recipient_campaign_id",
    "variant": "coalesce(recipient_variant, -1)",
    "provider": "coalesce(provider_kind, '')",
    "messages": "1",
    "settled": "(status NOT IN ('queued', 'sending', 'cancelled'))::int",
    "sent": "(sent_at IS NOT NULL)::int",
    "delivered": "(delivered_at IS NOT NULL)::int",
    **{s: f"(status = '{s}')::int" for s in ("bounced", "complained", "failed", "suppressed", "unknown")},
    "unique_opens": "(opened_at IS NOT NULL)::int",
    "unique_clicks": "(clicked_at IS NOT NULL)::int",
}
KEY = ["campaign_id", "variant", "provider"]


def _contributions(row: dict[str, str], source: str, sign: str = "") -> str:
    """SELECT of each row's key and (signed) counters from `source`."""
    values = [f"{row[k]} AS {k}" for k in KEY]
    values += [f"{sign}{row.get(c, '0')} AS {c}" for c in COUNTERS]
    return f"SELECT {', '.join(values)} FROM {source} WHERE {row['campaign_id']} IS NOT NULL"


def _add(changes: str, shard: str = f"pg_backend_pid() % {SHARDS}") -> str:
    """Add the per-key sums of `changes` into the counters' `shard` (keys
    in order, so two statements never wait on each other's rows crosswise)."""
    sums = ", ".join(f"sum({c})" for c in COUNTERS)
    return f"""
        INSERT INTO campaign_counters AS c ({", ".join(KEY)}, shard, {", ".join(COUNTERS)})
        SELECT {", ".join(KEY)}, {shard}, {sums}
        FROM ({changes}) d
        GROUP BY {", ".join(KEY)}
        HAVING ({sums}) <> ({", ".join("0" for _ in COUNTERS)})
        ORDER BY {", ".join(KEY)}
        ON CONFLICT ({", ".join(KEY)}, shard) DO UPDATE
        SET {", ".join(f"{c} = c.{c} + excluded.{c}" for c in COUNTERS)}
    """


def _triggers(table: str, row: dict[str, str]) -> None:
    """The insert and update triggers of `table` and their functions."""
    changes = {
        "insert": _contributions(row, "new_rows"),
        "update": f"{_contributions(row, 'new_rows')} UNION ALL {_contributions(row, 'old_rows', '-')}",
    }
    for event, source in changes.items():
        name = f"{table}_count_{event}"
        op.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {_add(source)};
                RETURN NULL;
            END
            $$
            """
        )
        transition = (
            "NEW TABLE AS new_rows" if event == "insert" else "OLD TABLE AS old_rows NEW TABLE AS new_rows"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} "
            f"REFERENCING {transition} FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def upgrade() -> None:
    op.execute(
        "ALTER TABLE messages ADD COLUMN recipient_campaign_id uuid, ADD COLUMN recipient_variant smallint"
    )
    op.execute(
        f"""
        CREATE TABLE campaign_counters (
            campaign_id uuid NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            variant smallint NOT NULL,
            provider text NOT NULL,
            shard smallint NOT NULL,
            {", ".join(f"{c} integer NOT NULL DEFAULT 0" for c in COUNTERS)},
            PRIMARY KEY (campaign_id, variant, provider, shard)
        )
        """
    )
    # The existing campaigns: their messages learn their snapshot, then
    # their counters are counted from the rows once (into shard 0).
    op.execute(
        """
        UPDATE messages m SET recipient_campaign_id = r.campaign_id, recipient_variant = r.variant
        FROM campaign_recipients r WHERE m.id = r.message_id
        """
    )
    op.execute(
        _add(
            f"{_contributions(RECIPIENT_ROW, 'campaign_recipients')} UNION ALL "
            f"{_contributions(MESSAGE_ROW, 'messages')}",
            shard="0",
        )
    )
    _triggers("campaign_recipients", RECIPIENT_ROW)
    _triggers("messages", MESSAGE_ROW)


def downgrade() -> None:
    for table in ("campaign_recipients", "messages"):
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_count_{event} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_count_{event}()")
    op.execute("DROP TABLE IF EXISTS campaign_counters")
    op.execute(
        "ALTER TABLE messages DROP COLUMN IF EXISTS recipient_campaign_id, "
        "DROP COLUMN IF EXISTS recipient_variant"
    )
