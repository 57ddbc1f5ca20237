"""The migrated schema matches the table definitions the code queries with."""

from __future__ import annotations

from sqlalchemy import text

from db.tables import metadata


async def test_tables_match_migrations(engine):
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            )
        )
        columns: dict[str, dict[str, bool]] = {}
        for table, column, nullable in rows:
            columns.setdefault(table, {})[column] = nullable == "YES"
    for table in metadata.sorted_tables:
        assert table.name in columns, f"table {table.name} not created by migrations"
        migrated = columns[table.name]
        declared = {c.name: c.nullable for c in table.columns}
        assert set(declared) == set(migrated), f"{table.name}: {set(declared) ^ set(migrated)}"
        for name, nullable in declared.items():
            assert bool(nullable) == migrated[name], f"{table.name}.{name} nullability differs"


async def test_events_indexes_exist(engine):
    async with engine.connect() as conn:
        names = set(
            (
                await conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'events'"))
            ).scalars()
        )
    assert {"events_idempotency_key", "events_profile_time_idx", "events_name_time_idx"} <= names
