"""Helpers for flow runtime tests: store an active flow the way the API
does (a version row, then the runtime's `flow_changed`), read enrollments."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text

from core.ids import uuid7
from db.engine import session_scope
from definitions.flows import FlowGraph
from flows import runtime


async def active_flow(
    sessionmaker, workspace_id: uuid.UUID, definition: dict[str, Any], name: str = ""
) -> uuid.UUID:
    """An active flow at version 1 with this (validated) definition."""
    FlowGraph.model_validate(definition)
    flow_id = uuid7()
    async with session_scope(sessionmaker) as session:
        conn = await session.connection()
        await conn.execute(
            text("INSERT INTO flows (id, workspace_id, name, status) VALUES (:f, :w, :n, 'active')"),
            {"f": flow_id, "w": workspace_id, "n": name or f"flow-{flow_id}"},
        )
        await conn.execute(
            text(
                "INSERT INTO flow_versions (flow_id, version, workspace_id, definition) "
                "VALUES (:f, 1, :w, CAST(:d AS jsonb))"
            ),
            {"f": flow_id, "w": workspace_id, "d": FlowGraph.model_validate(definition).model_dump_json()},
        )
        await runtime.flow_changed(session, workspace_id, flow_id)
    return flow_id


async def enrollments(engine, flow_id: uuid.UUID) -> list[dict[str, Any]]:
    """Enrollments of a flow, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM flow_enrollments WHERE flow_id = :f ORDER BY entered_at, id"), {"f": flow_id}
        )
        return [dict(r) for r in rows.mappings()]


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
