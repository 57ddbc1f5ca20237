"""Database layer: table definitions, engine factory, Alembic migrations."""
